"""Rows of one model that the loaded index generation does not hold yet, searched exactly.

The gateway adds every vector it computes here at once, so a string is searchable as soon as its embedding
is returned, long before the writer saves an index that holds it. When a new generation is loaded, the rows
it covers are dropped. The tail is mutated only on the event loop; a search in a worker thread works on a
`TailView`, which later appends cannot change (they write past its end; compaction builds new arrays).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TailView:
    """The first `size` rows of a tail, which a search thread can read while the event loop appends."""

    matrix: np.ndarray | None
    size: int
    texts: list[str]
    hashes: list[str]

    def search(self, vector: np.ndarray, k: int, only: frozenset[str] | None = None) -> list[tuple[str, float]]:
        """The `k` rows with the largest inner product with `vector` (all of them when there are fewer); with
        `only`, among the rows whose text hash is in it."""
        if self.matrix is None or self.size == 0 or k <= 0:
            return []
        positions = np.arange(self.size)
        if only is not None:
            positions = np.array([i for i in range(self.size) if self.hashes[i] in only], dtype=np.int64)
            if not len(positions):
                return []
        scores = self.matrix[positions] @ vector
        best = np.arange(len(positions)) if k >= len(positions) else np.argpartition(-scores, k - 1)[:k]
        return [(self.texts[positions[i]], float(scores[i])) for i in best]


class Tail:
    """Up to `capacity` rows of one model, held for exact search until an index generation covers them."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._matrix: np.ndarray | None = None
        self._texts: list[str] = []
        self._hashes: list[str] = []
        self._row_ids: list[int | None] = []
        self._positions: dict[str, int] = {}
        self.overflowed = False  # rows were refused: search is incomplete until an index generation covers them

    def __len__(self) -> int:
        return len(self._texts)

    def __contains__(self, text_hash: str) -> bool:
        return text_hash in self._positions

    def add(self, text_hash: str, text: str, vector: np.ndarray, row_id: int | None = None) -> None:
        """Hold a row for search unless it is held already; at capacity the row is refused and `overflowed` set."""
        if text_hash in self._positions:
            return
        size = len(self._texts)
        if size >= self._capacity:
            self.overflowed = True
            return
        if self._matrix is None or self._matrix.shape[1] != vector.shape[0]:
            self._matrix = np.empty((16, vector.shape[0]), dtype=np.float32)
        elif size == len(self._matrix):  # grow by doubling into a new array; views keep the old one
            grown = np.empty((2 * size, self._matrix.shape[1]), dtype=np.float32)
            grown[:size] = self._matrix[:size]
            self._matrix = grown
        self._matrix[size] = vector
        self._texts.append(text)
        self._hashes.append(text_hash)
        self._row_ids.append(row_id)
        self._positions[text_hash] = size

    def hashes_without_id(self) -> list[str]:
        """Rows whose database id is not known yet (not committed when last asked)."""
        return [h for h, row_id in zip(self._hashes, self._row_ids) if row_id is None]

    def drop_covered(self, found_ids: dict[str, int], rows_covered: int) -> None:
        """Forget the rows an index generation covering ids up to `rows_covered` holds; learn new ids."""
        keep: list[int] = []
        ids: list[int | None] = []
        for position, (text_hash, row_id) in enumerate(zip(self._hashes, self._row_ids)):
            row_id = row_id if row_id is not None else found_ids.get(text_hash)
            if row_id is not None and row_id <= rows_covered:
                continue
            keep.append(position)
            ids.append(row_id)
        self._keep(keep, ids)

    def remove(self, hashes: set[str]) -> None:
        """Forget the rows of these text hashes (deleted from the store)."""
        if not any(text_hash in self._positions for text_hash in hashes):
            return
        keep = [position for position, text_hash in enumerate(self._hashes) if text_hash not in hashes]
        self._keep(keep, [self._row_ids[position] for position in keep])

    def _keep(self, keep: list[int], ids: list[int | None]) -> None:
        """Hold only the rows at `keep` (ascending), whose row ids are `ids`."""
        if len(keep) == len(self._texts):
            self._row_ids = ids
            return
        self._matrix = self._matrix[keep] if self._matrix is not None and keep else None
        self._texts = [self._texts[i] for i in keep]
        self._hashes = [self._hashes[i] for i in keep]
        self._row_ids = ids
        self._positions = {text_hash: position for position, text_hash in enumerate(self._hashes)}

    def view(self) -> TailView:
        """The rows held now, as a view that later appends cannot change."""
        return TailView(self._matrix, len(self._texts), self._texts, self._hashes)
