"""The indexer's view of the database: committed vectors of a model, in id order, in chunks.

It has its own read-only connection so that reading a million rows for a build never holds the writer's
connection or its write lock (WAL readers do not block the writer). Every chunk is its own short read
transaction, so a long build does not pin an old snapshot and grow the WAL.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
from sqlalchemy import func, select, text

from shared.schema import database_engine, deletions, embeddings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VectorChunk:
    """Committed vectors of one model read together: their row ids, ascending, and one vector per id."""

    ids: np.ndarray  # int64, ascending
    vectors: np.ndarray  # float32, one row per id


class EmbeddingSource:
    """The indexer's own read-only access to the committed vectors, per model and in id order."""

    def __init__(self, database_url: str, chunk_rows: int = 50_000) -> None:
        self._engine = database_engine(database_url, read_only=True)
        self._chunk_rows = chunk_rows

    def models(self) -> list[str]:
        """Every model that has a stored row."""
        with self._engine.connect() as connection:
            return [row[0] for row in connection.execute(select(embeddings.c.model_name).distinct())]

    def dimensions(self, model: str) -> int | None:
        """The dimensions of one stored row of `model`, taken as the model's; None when it has no rows."""
        query = select(embeddings.c.dimensions).where(embeddings.c.model_name == model).limit(1)
        with self._engine.connect() as connection:
            return connection.execute(query).scalar()

    def count_after(self, model: str, after_id: int) -> int:
        """How many rows of `model` have an id above `after_id`."""
        query = select(func.count()).where(embeddings.c.model_name == model, embeddings.c.id > after_id)
        with self._engine.connect() as connection:
            return int(connection.execute(query).scalar() or 0)

    def last_id(self, model: str) -> int:
        """The highest row id of `model`; 0 when it has no rows."""
        query = select(func.max(embeddings.c.id)).where(embeddings.c.model_name == model)
        with self._engine.connect() as connection:
            return int(connection.execute(query).scalar() or 0)

    def last_deletion(self) -> int:
        """The id of the last `deletions` entry (0 when nothing was ever deleted)."""
        with self._engine.connect() as connection:
            return int(connection.execute(select(func.max(deletions.c.id))).scalar() or 0)

    def deleted_after(self, model: str, after: int) -> tuple[np.ndarray, int]:
        """Row ids of `model` deleted after `deletions` entry `after`, and the last entry read (`after` if none)."""
        query = (select(deletions.c.id, deletions.c.row_id).where(deletions.c.id > after,
                                                                  deletions.c.model_name == model)
                 .order_by(deletions.c.id))
        with self._engine.connect() as connection:
            rows = connection.execute(query).all()
        last = rows[-1][0] if rows else after
        return np.fromiter((row[1] for row in rows), dtype=np.int64, count=len(rows)), last

    def chunks_after(self, model: str, after_id: int, dimensions: int) -> Iterator[VectorChunk]:
        """Every vector of `model` with an id above `after_id`, in id order."""
        while True:
            query = (select(embeddings.c.id, embeddings.c.embedding)
                     .where(embeddings.c.model_name == model, embeddings.c.id > after_id)
                     .order_by(embeddings.c.id).limit(self._chunk_rows))
            with self._engine.connect() as connection:
                rows = connection.execute(query).all()
            if not rows:
                return
            after_id = rows[-1][0]
            chunk = _chunk(rows, dimensions, model)
            if len(chunk.ids):
                yield chunk
            if len(rows) < self._chunk_rows:
                return

    def sample(self, model: str, up_to_id: int, every: int, dimensions: int) -> np.ndarray:
        """About one vector in `every` of the model, chosen at random (to train an approximate index).

        The filter reads only the (model_name, id) index, so rows not chosen cost no blob read.
        """
        # random(): an integer in SQLite, a float in [0, 1) in PostgreSQL.
        chosen = "random() < 1.0 / :every" if self._engine.dialect.name == "postgresql" else "abs(random()) % :every = 0"
        query = text(f"SELECT id, embedding FROM embeddings WHERE model_name = :model AND id <= :up_to AND {chosen}")
        with self._engine.connect() as connection:
            rows = connection.execute(query, {"model": model, "up_to": up_to_id, "every": max(1, every)}).all()
        return _chunk(rows, dimensions, model).vectors

    def close(self) -> None:
        """Release the read-only engine's connections."""
        self._engine.dispose()


def _chunk(rows: Sequence[Any], dimensions: int, model: str) -> VectorChunk:
    width = dimensions * 4
    good = [row for row in rows if len(row[1]) == width]
    if len(good) != len(rows):  # a row of another size cannot join this index; say so rather than fail
        log.warning("model %s: %d rows are not %d-dimensional float32 and are left out of the index",
                    model, len(rows) - len(good), dimensions)
    ids = np.fromiter((row[0] for row in good), dtype=np.int64, count=len(good))
    vectors = np.frombuffer(b"".join(row[1] for row in good), dtype=np.float32).reshape(len(good), dimensions)
    return VectorChunk(ids, vectors)
