"""Where the gateway looks before asking a worker: a bounded in-memory LRU, then SQLite (read-only).

The LRU also holds vectors the writer has not committed yet, so a repeat within the flush window is a hit.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from pathlib import Path

import numpy as np
from sqlalchemy import select

from gateway.stored_vectors import DatabaseConnection, StoredVectorReader
from shared.schema import embeddings, first_column_page, sqlite_engine

CacheKey = tuple[str, str]  # (model_name, text_hash)


class VectorCache:
    def __init__(self, database_path: Path, capacity: int) -> None:
        self._memory: OrderedDict[CacheKey, np.ndarray] = OrderedDict()
        self._capacity = capacity
        self._engine = sqlite_engine(database_path, read_only=True)
        # The hot lookup bypasses SQLAlchemy on a connection of its own (gateway/stored_vectors.py says why);
        # the engine's connection keeps the shared pragmas (read-only, busy_timeout, autocommit).
        self._stored = StoredVectorReader(self._reader_connection)

    def _reader_connection(self) -> DatabaseConnection:
        connection = self._engine.raw_connection()
        connection.detach()  # out of the pool: after an error the reader closes it and opens the file afresh
        return connection

    def get_memory(self, key: CacheKey) -> np.ndarray | None:
        vector = self._memory.get(key)
        if vector is not None:
            self._memory.move_to_end(key)
        return vector

    def put(self, key: CacheKey, vector: np.ndarray) -> None:
        self._memory[key] = vector
        self._memory.move_to_end(key)
        while len(self._memory) > self._capacity:
            self._memory.popitem(last=False)

    async def get_stored(self, model: str, hashes: list[str]) -> dict[str, np.ndarray]:
        """Vectors already in the database for these hashes, remembered in memory too."""
        found = await self._stored.read(model, hashes)
        for text_hash, vector in found.items():
            self.put((model, text_hash), vector)
        return found

    async def stored_strings(self, offset: int, limit: int | None) -> list[str]:
        return await asyncio.to_thread(self._strings, offset, limit)

    def _strings(self, offset: int, limit: int | None) -> list[str]:
        query = select(embeddings.c.text).distinct().order_by(embeddings.c.text)
        return first_column_page(self._engine, query, offset, limit)

    def close(self) -> None:
        self._stored.close()
        self._engine.dispose()
