"""Where the gateway looks before asking a worker: a bounded in-memory LRU, then SQLite (read-only).

The LRU also holds vectors the writer has not committed yet, so a repeat within the flush window is a hit.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from pathlib import Path

import numpy as np
from sqlalchemy import select

from shared.schema import embeddings, first_column_page, sqlite_engine

CacheKey = tuple[str, str]  # (model_name, text_hash)
_SQLITE_MAX_PARAMS = 900


class VectorCache:
    def __init__(self, database_path: Path, capacity: int) -> None:
        self._memory: OrderedDict[CacheKey, np.ndarray] = OrderedDict()
        self._capacity = capacity
        self._engine = sqlite_engine(database_path, read_only=True)

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
        """Vectors already in the database for these hashes (one query per 900 hashes, off the event loop)."""
        if not hashes:
            return {}
        found = await asyncio.to_thread(self._read, model, hashes)
        for text_hash, vector in found.items():
            self.put((model, text_hash), vector)
        return found

    def _read(self, model: str, hashes: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        with self._engine.connect() as connection:
            for start in range(0, len(hashes), _SQLITE_MAX_PARAMS):
                chunk = hashes[start:start + _SQLITE_MAX_PARAMS]
                query = select(embeddings.c.text_hash, embeddings.c.embedding).where(
                    embeddings.c.model_name == model, embeddings.c.text_hash.in_(chunk))
                for text_hash, blob in connection.execute(query):
                    found[text_hash] = np.frombuffer(blob, dtype=np.float32)
        return found

    async def stored_strings(self, offset: int, limit: int | None) -> list[str]:
        return await asyncio.to_thread(self._strings, offset, limit)

    def _strings(self, offset: int, limit: int | None) -> list[str]:
        query = select(embeddings.c.text).distinct().order_by(embeddings.c.text)
        return first_column_page(self._engine, query, offset, limit)

    def close(self) -> None:
        self._engine.dispose()
