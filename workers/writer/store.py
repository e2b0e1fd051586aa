"""The writer's side of the database: idempotent batched inserts with retry on a locked database."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Callable, TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from shared.protocol import EmbeddingRow
from shared.schema import (
    COLLECTION,
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


def column_time(value: Any) -> datetime | None:
    """A time as the gateway sends it (Unix seconds) as the tables store it (naive UTC)."""
    return None if value is None else datetime.fromtimestamp(float(value), tz=UTC).replace(tzinfo=None)


def embedding_values(row: EmbeddingRow) -> dict[str, Any]:
    """The `embeddings` columns of a row as the gateway sends it (times as Unix seconds): the one mapping."""
    return {
        "text": row.text,
        "text_hash": row.text_hash,
        "model_name": row.model_name,
        "embedding": row.embedding,
        "dimensions": row.dimensions,
        "ip_address": row.ip_address,
        "request_time": column_time(row.request_time),
        "response_time": column_time(row.response_time),
        "total_time": row.total_time,
        "document_id": row.document_id,
    }


_LARGEST_ID = (f"SELECT max(coalesce((SELECT max(id) FROM {embeddings.name}), 0), "
               f"coalesce((SELECT max(row_id) FROM {deletions.name}), 0))")


def with_new_ids(connection: Connection, values: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`values` with row ids above every id ever used, on SQLite.

    SQLite gives a new row the largest id in the table plus one, so after the newest rows are deleted their ids
    come back; but ids must only grow: the indexer holds "every row up to id N" and the deletions log names
    rows by id, so a reused id would be skipped by the index, or removed from it as the deleted row. PostgreSQL's
    sequence never hands an id out twice. (The writer is the only writer: nothing races for the next id.)
    """
    if connection.dialect.name != "sqlite" or not values:
        return values
    # Plain SQL: built, keyed and compiled by SQLAlchemy at every commit, this query was a fifth of the writer's
    # CPU under load (py-spy).
    start = int(connection.exec_driver_sql(_LARGEST_ID).scalar() or 0) + 1
    return [{**value, "id": start + offset} for offset, value in enumerate(values)]


def insert_memberships(connection: Connection, values: list[dict[str, str]]) -> None:
    """Record memberships (kind, name, model_name, text_hash); those already recorded are left as they are."""
    if values:
        connection.execute(insert_ignoring_duplicates(connection, memberships, ["kind", "name", "model_name",
                                                                                "text_hash"]), values)


def collection_memberships(rows: list[EmbeddingRow]) -> list[dict[str, str]]:
    """The memberships the rows that name a collection ask for."""
    return [{"kind": COLLECTION, "name": row.collection, "model_name": row.model_name, "text_hash": row.text_hash}
            for row in rows if row.collection]


class EmbeddingStore:
    """Owns the only read-write connection to the database."""

    def __init__(self, database_url: str, retry: RetryPolicy) -> None:
        self._engine = database_engine(database_url)
        self._retry = retry
        self._insert = insert_ignoring_duplicates(self._engine, embeddings, ["text_hash", "model_name"])
        create_schema(self._engine)

    def insert_embeddings(self, rows: list[EmbeddingRow]) -> int:
        """Insert rows in one transaction; rows already present (same text_hash and model) are left as they are."""
        if not rows:
            return 0
        values = [embedding_values(row) for row in rows]

        def write() -> int:
            with self._engine.begin() as connection:
                inserted = connection.execute(self._insert, with_new_ids(connection, values)).rowcount or 0
                insert_memberships(connection, collection_memberships(rows))
                return inserted

        return self._retry.run(write)

    def run_in_transaction(self, work: Callable[[Connection], T]) -> T:
        """`work` in one write transaction, retried while the database is locked (document writes)."""

        def attempt() -> T:
            with self._engine.begin() as connection:
                return work(connection)

        return self._retry.run(attempt)

    def close(self) -> None:
        """Close the read-write connection (the engine's whole pool)."""
        self._engine.dispose()
