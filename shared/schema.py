"""The database schema, shared by the writer (the only process that writes) and the readers, and the engines.

SQLite (a file under DATA_DIR, the default) or PostgreSQL (`DATABASE_URL=postgresql+psycopg://...`, psycopg 3)
hold the same tables; `database_engine` opens either with what its readers or its writer need.

Table and column names follow the original service so its databases and reports stay readable; the vector
is stored as float32 bytes rather than JSON text (JSON made a 4096-d row about 80 KB and every index build
a parse).
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any, Iterator, Sequence, TypeVar

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Insert, Select

from shared.settings import is_sqlite

metadata = MetaData()

embeddings = Table(
    "embeddings",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("text", Text, nullable=False),
    Column("text_hash", String(64), nullable=False),
    Column("model_name", String, nullable=False),
    Column("embedding", LargeBinary, nullable=False),
    Column("dimensions", Integer, nullable=False),
    Column("ip_address", String),
    Column("request_time", DateTime),
    Column("response_time", DateTime),
    Column("total_time", Float),
    Column("document_id", Integer, ForeignKey("documents.id"), nullable=True),
    UniqueConstraint("text_hash", "model_name", name="uq_embeddings_text_hash_model"),
    Index("ix_embeddings_model_id", "model_name", "id"),
)

# Documents (gateway/documents/, workers/writer/documents.py): one `documents` row and one
# `document_embeddings` row per (file, model), written with the sentence rows in one transaction; each
# sentence's `embeddings` row points at the first document it was seen in.
documents = Table(
    "documents",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model_name", String, nullable=False),
    Column("document_hash", String(64), nullable=False),
    Column("filename", String),
    Column("mimetype", String),
    Column("sentence_count", Integer),
    Column("created_at", DateTime),
    UniqueConstraint("document_hash", "model_name", name="uq_documents_hash_model"),
)

document_embeddings = Table(
    "document_embeddings",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("document_id", Integer, ForeignKey("documents.id"), nullable=False),
    Column("filename", String),
    Column("mimetype", String),
    Column("file_hash", String(64), nullable=False),
    Column("model_name", String, nullable=False),
    Column("file_data", LargeBinary),
    # The original's name; the value is zlib-compressed JSON of the kept sentences in order (see
    # gateway/documents/results_blob.py): with their `embeddings` rows that regenerates the answer in any orient.
    Column("document_embedding_results_json", LargeBinary),
    Column("ip_address", String),
    Column("request_time", DateTime),
    Column("response_time", DateTime),
    Column("total_time", Float),
    UniqueConstraint("file_hash", "model_name", name="uq_document_embeddings_hash_model"),
)

# Collections and documents a stored text belongs to (search scopes, deletion): one row per (group, model,
# text). Keyed by the text's hash rather than the row id, so the writer records a membership for a text that
# was a cache hit (already stored) without reading its id, and it survives the text being computed again.
COLLECTION = "collection"
DOCUMENT = "document"  # `name` is the document's file hash (SHA3-256 of its bytes)
memberships = Table(
    "memberships",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("name", String, nullable=False),
    Column("model_name", String, nullable=False),
    Column("text_hash", String(64), nullable=False),
    UniqueConstraint("kind", "name", "model_name", "text_hash", name="uq_memberships"),
    Index("ix_memberships_text", "model_name", "text_hash"),
)

# Every row the writer deleted, in order: gateways read it to drop the rows from their caches and search
# tails, indexers to remove the ids from their FAISS indexes (each remembers the last entry it applied).
deletions = Table(
    "deletions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("row_id", Integer, nullable=False),
    Column("model_name", String, nullable=False),
    Column("text_hash", String(64), nullable=False),
    Column("deleted_at", DateTime),
    Index("ix_deletions_row_id", "row_id"),
)

# Keyword search (gateway/search/keyword.py). SQLite: an FTS5 index over `embeddings.text` (external content:
# the text is not stored twice), updated in the writer's own transaction; BM25 ranks. PostgreSQL: a GIN index
# on the text's tsvector.
# New rows enter the FTS index in one statement per insert (SQLITE_KEYWORD_INDEX_NEW_ROWS, run by the writer's
# insert_rows, the one way rows are inserted), not by a trigger per row: measured on real sentences, 10 rows
# per commit, the trigger cost 0.10 ms CPU per row and the one statement 0.06 (an executemany runs the trigger
# once per row, each its own statement; one INSERT ... SELECT indexes the rows together). Deletes stay with a
# trigger: every delete path then updates the index.
_SQLITE_KEYWORD_INDEX = [
    "CREATE VIRTUAL TABLE IF NOT EXISTS embeddings_fts USING fts5("
    "text, content='embeddings', content_rowid='id', tokenize='porter unicode61')",
    "DROP TRIGGER IF EXISTS embeddings_fts_insert",  # a database from before the insert statement
    "CREATE TRIGGER IF NOT EXISTS embeddings_fts_delete AFTER DELETE ON embeddings BEGIN "
    "INSERT INTO embeddings_fts(embeddings_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
]
# The rows from id ? on, just inserted (ids only grow on SQLite: see workers/writer/store.py), into the FTS index.
SQLITE_KEYWORD_INDEX_NEW_ROWS = "INSERT INTO embeddings_fts(rowid, text) SELECT id, text FROM embeddings WHERE id >= ?"
POSTGRESQL_TEXT_SEARCH_CONFIG = "english"
_POSTGRESQL_KEYWORD_INDEX_NAME = "ix_embeddings_text_search"
_POSTGRESQL_KEYWORD_INDEX = [
    f"CREATE INDEX IF NOT EXISTS {_POSTGRESQL_KEYWORD_INDEX_NAME} ON embeddings "
    f"USING GIN (to_tsvector('{POSTGRESQL_TEXT_SEARCH_CONFIG}', text))",
]


def create_schema(engine: Engine) -> None:
    """Create what is missing: the tables, their indexes and the keyword index (filled from the rows already
    stored when it is new, so a database from before keyword search becomes searchable by keyword)."""
    metadata.create_all(engine)
    with engine.begin() as connection:
        if engine.dialect.name != "sqlite":
            for statement in _POSTGRESQL_KEYWORD_INDEX:
                connection.exec_driver_sql(statement)
            return
        existed = connection.exec_driver_sql(
            "SELECT 1 FROM sqlite_master WHERE name = 'embeddings_fts'").first() is not None
        for statement in _SQLITE_KEYWORD_INDEX:
            connection.exec_driver_sql(statement)
        if not existed:
            connection.exec_driver_sql("INSERT INTO embeddings_fts(embeddings_fts) VALUES ('rebuild')")


def schema_created(engine: Engine) -> bool:
    """True once `create_schema` has run on this database: every table and the keyword index are there (a reader
    started alongside the writer waits for this). False also while the database cannot be opened at all."""
    try:
        with engine.connect() as connection:
            found = inspect(connection)
            tables = set(found.get_table_names())
            if engine.dialect.name == "sqlite":
                return set(metadata.tables) | {"embeddings_fts"} <= tables
            return set(metadata.tables) <= tables and connection.exec_driver_sql(
                "SELECT 1 FROM pg_indexes WHERE indexname = %(name)s", {"name": _POSTGRESQL_KEYWORD_INDEX_NAME}
            ).first() is not None
    except DBAPIError:
        return False


# Bound parameters per statement: below the 999 of SQLite builds before 3.32, with room for the other terms.
SQLITE_MAX_PARAMS = 900
T = TypeVar("T")


def parameter_chunks(values: Sequence[T]) -> Iterator[Sequence[T]]:
    """`values` in slices small enough for one `IN (...)` each."""
    for start in range(0, len(values), SQLITE_MAX_PARAMS):
        yield values[start:start + SQLITE_MAX_PARAMS]


def text_hash(text: str) -> str:
    """The cache key's text part, as in the original service: SHA3-256 of the UTF-8 text."""
    return hashlib.sha3_256(text.encode("utf-8")).hexdigest()


def first_column_page(engine: Engine, query: Select[Any], offset: int, limit: int | None) -> list[Any]:
    """The first column of `query`'s rows from `offset`, at most `limit` of them (all when None)."""
    query = query.offset(offset)
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as connection:
        return [row[0] for row in connection.execute(query)]


def sqlite_file(url: str) -> Path:
    """The file of a SQLite URL (`sqlite:///path`, as the original service's DATABASE_URL took it)."""
    for prefix in ("sqlite+aiosqlite:///", "sqlite+pysqlite:///", "sqlite:///"):
        if url.startswith(prefix):
            return Path(url[len(prefix):]).expanduser()
    raise ValueError(f"not a SQLite file URL: {url!r}")


def database_engine(url: str, *, read_only: bool = False) -> Engine:
    """An engine for the database at `url`; readers get read-only connections that see new commits at once."""
    if is_sqlite(url):
        return sqlite_engine(sqlite_file(url), read_only=read_only)
    return postgresql_engine(url, read_only=read_only)


def postgresql_engine(url: str, *, read_only: bool = False) -> Engine:
    """PostgreSQL through psycopg 3. Connections are checked before use (pre-ping), so after a server restart the
    pool reconnects instead of handing out dead connections; readers run in autocommit, read-only."""
    connect_args: dict[str, Any] = {"connect_timeout": 5}
    if read_only:
        connect_args["options"] = "-c default_transaction_read_only=on"
    return create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=8, connect_args=connect_args,
                         isolation_level="AUTOCOMMIT" if read_only else "READ COMMITTED")


def insert_ignoring_duplicates(connection_or_engine: Connection | Engine, table: Table, unique: list[str]) -> Insert:
    """INSERT that leaves rows already present (by the `unique` columns) as they are: ON CONFLICT DO NOTHING."""
    dialect = connection_or_engine.dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(table).on_conflict_do_nothing(index_elements=unique)


def sqlite_engine(path: Path, *, read_only: bool = False) -> Engine:
    """An engine with the pragmas every connection needs; readers open the file read-only."""
    if read_only:
        engine = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true", pool_size=8, max_overflow=8)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        # SQLAlchemy's pysqlite driver starts transactions lazily; we issue BEGIN ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 5000")
        if not read_only:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        # A deferred BEGIN that later writes can fail with SQLITE_BUSY; writers take the lock up front.
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine
