"""What search reads from the database (read-only): texts of result ids, ids of recent rows, rows not yet indexed.

Calls are blocking; the search code runs them in a worker thread, never on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select

from shared.schema import embeddings, parameter_chunks, sqlite_engine


@dataclass(frozen=True)
class StoredRow:
    id: int
    text: str
    text_hash: str
    vector: np.ndarray


class SearchStore:
    def __init__(self, database_path: Path) -> None:
        self._engine = sqlite_engine(database_path, read_only=True)

    def texts(self, ids: list[int]) -> dict[int, str]:
        """The text of each id (one query for any usual k)."""
        found: dict[int, str] = {}
        with self._engine.connect() as connection:
            for chunk in parameter_chunks(ids):
                query = select(embeddings.c.id, embeddings.c.text).where(embeddings.c.id.in_(chunk))
                found.update((row_id, text) for row_id, text in connection.execute(query))
        return found

    def ids(self, model: str, hashes: list[str]) -> dict[str, int]:
        """The row id of each committed text hash of `model` (absent: not committed yet)."""
        found: dict[str, int] = {}
        with self._engine.connect() as connection:
            for chunk in parameter_chunks(hashes):
                query = select(embeddings.c.text_hash, embeddings.c.id).where(
                    embeddings.c.model_name == model, embeddings.c.text_hash.in_(chunk))
                found.update((text_hash, row_id) for text_hash, row_id in connection.execute(query))
        return found

    def rows_after(self, model: str, after_id: int, limit: int) -> list[StoredRow]:
        """Up to `limit` rows of `model` with an id above `after_id`, in id order."""
        query = (select(embeddings.c.id, embeddings.c.text, embeddings.c.text_hash, embeddings.c.embedding)
                 .where(embeddings.c.model_name == model, embeddings.c.id > after_id)
                 .order_by(embeddings.c.id).limit(limit))
        with self._engine.connect() as connection:
            return [StoredRow(row_id, text, text_hash, np.frombuffer(blob, dtype=np.float32))
                    for row_id, text, text_hash, blob in connection.execute(query)]

    def close(self) -> None:
        self._engine.dispose()
