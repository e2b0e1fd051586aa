"""Every read the gateway makes of the store, over one read-only engine.

The writer process is the only one that writes (workers/writer/); the gateway reads through this one object:
the cache's stored vectors (batched on a reader thread of their own, gateway/stored_vectors.py), the stored
strings, the stored documents, and what search needs from the rows (texts of hits, ids of recent rows, rows
not yet indexed). The blocking methods are for search, which calls them on a worker thread.

A database that does not answer (PostgreSQL restarting, a SQLite file not there yet) is a 503 with Retry-After
for the client, never a 500: every read raises `Unavailable` naming the driver's complaint.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
from sqlalchemy import Select, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from gateway.documents.results_blob import decode_results
from gateway.errors import Unavailable
from gateway.search.keyword import keyword_query
from gateway.search.scope import Members, Scope
from gateway.stored_vectors import DatabaseConnection, Found, StoredVectorReader
from shared.protocol import DeletedRow
from shared.schema import (
    database_engine,
    deletions,
    document_embeddings,
    embeddings,
    first_column_page,
    parameter_chunks,
    schema_created,
)

_SCHEMA_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class StoredRow:
    """A committed row as search's tail reads it."""

    id: int
    text: str
    text_hash: str
    vector: np.ndarray


@dataclass(frozen=True)
class FoundDocument:
    """A document stored before: what a re-upload of the same bytes is answered from."""

    filename: str
    mimetype: str
    sentences: list[str]


class ReadOnlyDatabase:
    """The store as the gateway sees it; `close()` once, when the app stops."""

    def __init__(self, database_url: str) -> None:
        self._engine = database_engine(database_url, read_only=True)
        # The hot lookup bypasses SQLAlchemy on a connection of its own (gateway/stored_vectors.py says why);
        # taken from this engine, the connection keeps the shared settings (read-only, busy_timeout, autocommit).
        placeholder = "?" if self._engine.dialect.paramstyle == "qmark" else "%s"
        self._vectors = StoredVectorReader(self._detached_connection, placeholder=placeholder)
        # The raw connection raises the driver's own errors (sqlite3.Error, psycopg.Error), SQLAlchemy its wrappers.
        self._failures: tuple[type[BaseException], ...] = (DBAPIError, PoolTimeout,
                                                           self._engine.dialect.loaded_dbapi.Error)

    @contextlib.contextmanager
    def _answering(self) -> Iterator[None]:
        """Turns the driver's failures into a 503 for the client."""
        try:
            yield
        except self._failures as exc:
            lines = str(exc).strip().splitlines()
            reason = lines[0][:300] if lines else type(exc).__name__
            raise Unavailable(f"the database did not answer: {reason}; retry shortly") from exc

    async def wait_for_schema(self, within: float) -> bool:
        """Wait until the writer has created the tables (it starts alongside this gateway); False when they are
        still missing after `within` seconds (the gateway then serves anyway, as 503s until they appear)."""
        deadline = time.monotonic() + within
        while not await asyncio.to_thread(schema_created, self._engine):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(_SCHEMA_POLL_SECONDS)
        return True

    def _detached_connection(self) -> DatabaseConnection:
        connection = self._engine.raw_connection()
        connection.detach()  # out of the pool: after an error the reader closes it and opens the file afresh
        return connection

    async def vectors(self, model: str, hashes: list[str]) -> Found:
        """The stored vectors of those of `hashes` that `model` has embedded, by hash."""
        with self._answering():
            return await self._vectors.read(model, hashes)

    async def stored_strings(self, offset: int, limit: int | None) -> list[str]:
        """Distinct stored texts of every model, in text order."""
        query = select(embeddings.c.text).distinct().order_by(embeddings.c.text)
        with self._answering():
            return await asyncio.to_thread(first_column_page, self._engine, query, offset, limit)

    async def find_document(self, file_hash: str, model: str) -> FoundDocument | None:
        """The stored document with these bytes embedded by this model, if any."""
        with self._answering():
            return await asyncio.to_thread(self._find_document, file_hash, model)

    def _find_document(self, file_hash: str, model: str) -> FoundDocument | None:
        query = select(document_embeddings.c.filename, document_embeddings.c.mimetype,
                       document_embeddings.c.document_embedding_results_json).where(
            document_embeddings.c.file_hash == file_hash, document_embeddings.c.model_name == model)
        with self._engine.connect() as connection:
            row = connection.execute(query).first()
        if row is None:
            return None
        return FoundDocument(row.filename or "", row.mimetype or "", decode_results(row.document_embedding_results_json))

    async def document_filenames(self, offset: int, limit: int | None) -> list[str]:
        """Distinct file names of the stored documents, in the order they were first stored."""
        first_stored = func.min(document_embeddings.c.id)
        query = select(document_embeddings.c.filename).group_by(document_embeddings.c.filename).order_by(first_stored)
        with self._answering():
            return await asyncio.to_thread(first_column_page, self._engine, query, offset, limit)

    def texts(self, ids: list[int]) -> dict[int, str]:
        """The text of each row id (one query for any usual k). Blocking."""
        found: dict[int, str] = {}
        with self._answering(), self._engine.connect() as connection:
            for chunk in parameter_chunks(ids):
                query = select(embeddings.c.id, embeddings.c.text).where(embeddings.c.id.in_(chunk))
                found.update((row_id, text) for row_id, text in connection.execute(query))
        return found

    def row_ids(self, model: str, hashes: list[str]) -> dict[str, int]:
        """The row id of each committed text hash of `model` (absent: not committed yet). Blocking."""
        found: dict[str, int] = {}
        with self._answering(), self._engine.connect() as connection:
            for chunk in parameter_chunks(hashes):
                query = select(embeddings.c.text_hash, embeddings.c.id).where(
                    embeddings.c.model_name == model, embeddings.c.text_hash.in_(chunk))
                found.update((text_hash, row_id) for text_hash, row_id in connection.execute(query))
        return found

    def rows_after(self, model: str, after_id: int, limit: int) -> list[StoredRow]:
        """Up to `limit` rows of `model` with an id above `after_id`, in id order. Blocking."""
        query = (select(embeddings.c.id, embeddings.c.text, embeddings.c.text_hash, embeddings.c.embedding)
                 .where(embeddings.c.model_name == model, embeddings.c.id > after_id)
                 .order_by(embeddings.c.id).limit(limit))
        with self._answering(), self._engine.connect() as connection:
            return [StoredRow(row_id, text, text_hash, np.frombuffer(blob, dtype=np.float32))
                    for row_id, text, text_hash, blob in connection.execute(query)]

    async def hashes_after(self, after_id: int, limit: int) -> list[tuple[int, str, str]]:
        """(id, model, text hash) of up to `limit` rows of every model with an id above `after_id`, in id order."""
        query = (select(embeddings.c.id, embeddings.c.model_name, embeddings.c.text_hash)
                 .where(embeddings.c.id > after_id).order_by(embeddings.c.id).limit(limit))
        with self._answering():
            return [(row_id, model, text_hash) for row_id, model, text_hash in await asyncio.to_thread(self._all, query)]

    def members(self, model: str, scope: Scope) -> Members:
        """The committed rows of `model` in `scope`. Blocking."""
        query = select(embeddings.c.id, embeddings.c.text_hash).where(embeddings.c.model_name == model,
                                                                      *scope.conditions(model))
        with self._answering(), self._engine.connect() as connection:
            rows = connection.execute(query).all()
        return Members(np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows)),
                       frozenset(row[1] for row in rows))

    def keyword_matches(self, model: str, words: list[str], limit: int, scope: Scope) -> list[tuple[str, float]]:
        """(text, score) of `model`'s strings holding any of `words`, best first (gateway/search/keyword.py).
        Blocking."""
        query = keyword_query(self._engine.dialect.name, words, model, limit).where(*scope.conditions(model))
        with self._answering(), self._engine.connect() as connection:
            return [(row_text, float(score)) for row_text, score in connection.execute(query)]

    async def last_deletion(self) -> int:
        """The id of the last entry of the deletions log (0 when nothing was ever deleted)."""
        query = select(func.max(deletions.c.id))
        with self._answering():
            return int(await asyncio.to_thread(self._scalar, query) or 0)

    async def deletions_after(self, after: int, limit: int) -> list[tuple[int, DeletedRow]]:
        """Up to `limit` entries of the deletions log after entry `after`, in order, with their entry ids."""
        query = (select(deletions.c.id, deletions.c.row_id, deletions.c.model_name, deletions.c.text_hash)
                 .where(deletions.c.id > after).order_by(deletions.c.id).limit(limit))
        with self._answering():
            rows = await asyncio.to_thread(self._all, query)
        return [(entry, DeletedRow(row_id, model, text_hash)) for entry, row_id, model, text_hash in rows]

    def _scalar(self, query: Select[Any]) -> Any:
        with self._engine.connect() as connection:
            return connection.execute(query).scalar()

    def _all(self, query: Select[Any]) -> list[Any]:
        with self._engine.connect() as connection:
            return list(connection.execute(query).all())

    def close(self) -> None:
        """Stop the stored-vector reader, then release the engine's connections."""
        self._vectors.close()
        self._engine.dispose()
