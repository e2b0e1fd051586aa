"""The SQLite schema, shared by the writer (the only process that writes) and the readers.

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
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import Select

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
