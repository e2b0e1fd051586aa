"""The writer's side of the database: idempotent batched inserts with retry on a locked database."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Callable, Sequence, TypeVar

from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from shared.protocol import EmbeddingRow, StoreMarks
from shared.schema import (
    COLLECTION,
    SQLITE_KEYWORD_INDEX_NEW_ROWS,
    create_schema,
    database_engine,
    deletions,
    embeddings,
    insert_ignoring_duplicates,
    memberships,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter for `database is locked` (MAX_RETRIES, RETRY_DELAY_BASE_SECONDS, JITTER_FACTOR)."""

    max_retries: int
    delay_base_seconds: float
    jitter_factor: float

    def run(self, operation: Callable[[], T]) -> T:
        """`operation()`, retried with backoff while SQLite reports the database locked or busy; other errors raise."""
        for attempt in range(self.max_retries + 1):
            try:
                return operation()
            except OperationalError as exc:
                if "locked" not in str(exc).lower() and "busy" not in str(exc).lower():
                    raise
                if attempt == self.max_retries:
                    raise
                delay = self.delay_base_seconds * (2**attempt)
                delay += random.uniform(0, delay * self.jitter_factor)
                log.warning("database locked (attempt %d of %d); retrying in %.3fs", attempt + 1, self.max_retries + 1, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")


def _utc(seconds: Any) -> datetime:
    return datetime.fromtimestamp(float(seconds), tz=UTC).replace(tzinfo=None)


def column_time(value: Any) -> datetime | None:
    """A time as the gateway sends it (Unix seconds) as the tables store it (naive UTC)."""
    return None if value is None else _utc(value)


def _sqlite_time(value: Any) -> str | None:
    """A time (Unix seconds) as SQLAlchemy's SQLite DateTime stores it, so that reads through it parse it back."""
    return None if value is None else _utc(value).isoformat(" ", "microseconds")


# The columns an embeddings row is inserted with (after its id, on SQLite), in the order of `_row_values`.
_COLUMNS = ("text", "text_hash", "model_name", "embedding", "dimensions", "ip_address", "request_time",
            "response_time", "total_time", "document_id")


def _row_values(row: EmbeddingRow, document_id: int | None, time: Callable[[Any], Any]) -> tuple[Any, ...]:
    """The `embeddings` columns of a row as the gateway sends it, in `_COLUMNS` order, its times (Unix seconds)
    through `time`: the one mapping."""
    return (row.text, row.text_hash, row.model_name, row.embedding, row.dimensions, row.ip_address,
            time(row.request_time), time(row.response_time), row.total_time,
            document_id if document_id is not None else row.document_id)


_LARGEST_ID = (f"SELECT max(coalesce((SELECT max(id) FROM {embeddings.name}), 0), "
               f"coalesce((SELECT max(row_id) FROM {deletions.name}), 0))")
_MARKS = select(select(func.max(embeddings.c.id)).scalar_subquery(),
                select(func.max(deletions.c.row_id)).scalar_subquery(),
                select(func.max(deletions.c.id)).scalar_subquery())
_SQLITE_INSERT = (f"INSERT INTO {embeddings.name} (id, {', '.join(_COLUMNS)}) VALUES ({', '.join('?' * (len(_COLUMNS) + 1))}) "
                  "ON CONFLICT (text_hash, model_name) DO NOTHING")


def insert_rows(connection: Connection, rows: Sequence[EmbeddingRow], document_id: int | None = None) -> int:
    """Insert `rows` (with `document_id` when given); those already stored (same text_hash and model) are left as
    they are. Returns how many were new.

    On SQLite the rows go to the driver as tuples in one executemany, past SQLAlchemy's per-row parameter
    handling (dicts, a bind processor per time column), and then into the keyword index in one statement
    (shared/schema.py says why not by a trigger). On PostgreSQL they go through SQLAlchemy as before (and the GIN
    index follows by itself): this path's cost is measured on SQLite, the default.

    On SQLite every row gets an id above every id ever used. SQLite gives a new row the largest id in the table
    plus one, so after the newest rows are deleted their ids come back; but ids must only grow: the indexer holds
    "every row up to id N" and the deletions log names rows by id, so a reused id would be skipped by the index,
    or removed from it as the deleted row. PostgreSQL's sequence never hands an id out twice. (The writer is the
    only writer: nothing races for the next id.)
    """
    if not rows:
        return 0
    if connection.dialect.name != "sqlite":
        statement = insert_ignoring_duplicates(connection, embeddings, ["text_hash", "model_name"])
        values = [dict(zip(_COLUMNS, _row_values(row, document_id, column_time))) for row in rows]
        return connection.execute(statement, values).rowcount or 0
    start = int(connection.exec_driver_sql(_LARGEST_ID).scalar() or 0) + 1
    tuples = [(start + offset, *_row_values(row, document_id, _sqlite_time)) for offset, row in enumerate(rows)]
    inserted = connection.exec_driver_sql(_SQLITE_INSERT, tuples).rowcount or 0
    if inserted:
        connection.exec_driver_sql(SQLITE_KEYWORD_INDEX_NEW_ROWS, (start,))
    return inserted


def _marks(connection: Connection) -> StoreMarks:
    rows, deleted_rows, entries = connection.execute(_MARKS).one()
    return StoreMarks(rows=max(rows or 0, deleted_rows or 0), deletions=entries or 0)


def insert_memberships(connection: Connection, values: list[dict[str, str]]) -> None:
    """Record memberships (kind, name, model_name, text_hash); those already recorded are left as they are."""
    if values:
        connection.execute(insert_ignoring_duplicates(connection, memberships, ["kind", "name", "model_name",
                                                                                "text_hash"]), values)


def collection_memberships(rows: list[EmbeddingRow]) -> list[dict[str, str]]:
    """The memberships the rows that name a collection ask for."""
    return [{"kind": COLLECTION, "name": row.collection, "model_name": row.model_name, "text_hash": row.text_hash}
            for row in rows if row.collection]


@dataclass(frozen=True)
class Insertion:
    """What one insert did: how many rows were new, and the store's marks as its transaction left them (None
    when it had no rows and wrote nothing)."""

    new: int
    marks: StoreMarks | None


class EmbeddingStore:
    """Owns the only read-write connection to the database."""

    def __init__(self, database_url: str, retry: RetryPolicy) -> None:
        self._engine = database_engine(database_url)
        self._retry = retry
        create_schema(self._engine)
        # SQLite: one connection held for the writer's life; a checkout from the pool per commit (and its reset on
        # return) was about a tenth of the writer's Python samples under load (py-spy). PostgreSQL: a checkout per
        # transaction, pinged first, so that a restarted server is connected to again.
        self._held = self._engine.connect() if self._engine.dialect.name == "sqlite" else None

    def insert_embeddings(self, rows: list[EmbeddingRow]) -> Insertion:
        """Insert rows in one transaction; rows already present (same text_hash and model) are left as they are.

        The marks are read inside the insert's transaction: a transaction of their own after every commit was
        about a tenth of the writer's loop under load (py-spy), and one writer means nothing moves them between."""
        if not rows:
            return Insertion(new=0, marks=None)

        def write(connection: Connection) -> Insertion:
            inserted = insert_rows(connection, rows)
            insert_memberships(connection, collection_memberships(rows))
            return Insertion(new=inserted, marks=_marks(connection))

        return self.run_in_transaction(write)

    def marks(self) -> StoreMarks:
        """The store's marks now: the largest row id ever given out and the deletions log's last entry."""
        return self.run_in_transaction(_marks)

    def run_in_transaction(self, work: Callable[[Connection], T]) -> T:
        """`work` in one write transaction, retried while the database is locked (document writes)."""

        def attempt() -> T:
            if self._held is None:
                with self._engine.begin() as connection:
                    return work(connection)
            with self._held.begin():
                return work(self._held)

        return self._retry.run(attempt)

    def close(self) -> None:
        """Close the read-write connection (the engine's whole pool)."""
        if self._held is not None:
            self._held.close()
        self._engine.dispose()
