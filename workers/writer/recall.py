"""How well an IVF index finds the exact nearest neighbours, for every nprobe at once, from its own vectors.

A few hundred stored vectors, drawn at random, are the queries. Their exact top-k is found by brute force
over every vector the index holds (read from its inverted lists in blocks, one matrix product per block),
the query's own row left out, as the gateway leaves the query text out of its answer. An IVF-Flat search
with nprobe p scans the p lists whose centroids are nearest the query and returns the best k of what it
scanned, with exact similarities: so a true neighbour is found exactly when its list is among the first p
the quantizer orders for that query. Knowing each true neighbour's list and each query's order of lists
gives recall@k for every nprobe from 1 to nlist without running a single approximate search, at the cost of
one brute-force pass over the vectors (about 1.5 s for 400 queries over 1M 384-d rows on 2 cores).

The nprobe chosen is the smallest whose recall, less two standard errors of this sample's mean, still
reaches the target: with 400 queries that asks about 0.01 more than the target, so that another sample of
queries (the benchmark's, or real traffic) sees the target too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import faiss
import numpy as np

QUERIES = 400
K = 10
STANDARD_ERRORS = 2.0
# Vectors compared with the queries in one matrix product: large enough for BLAS to run at full speed,
# small enough that the Q × block score matrix stays in cache-friendly tens of megabytes.
BLOCK_ROWS = 32_768


@dataclass(frozen=True)
class RecallCurve:
    """Recall@k against exact search for every nprobe of one IVF index, measured on `queries` stored vectors."""

    per_query: np.ndarray  # (queries, nlist): share of query q's true top-k found with nprobe = column + 1
    queries: int
    k: int
    query_ids: np.ndarray  # the stored rows used as queries

    @property
    def nlist(self) -> int:
        """The index's inverted lists: the largest nprobe."""
        return int(self.per_query.shape[1])

    def recall(self, nprobe: int) -> float:
        """Mean recall@k with `nprobe` lists probed (1 for the exhaustive nlist and beyond)."""
        if not self.queries:
            return 1.0
        return float(self.per_query[:, min(max(nprobe, 1), self.nlist) - 1].mean())

    def lower_bound(self, nprobe: int) -> float:
        """The recall at `nprobe` less STANDARD_ERRORS standard errors of the sample mean."""
        if self.queries < 2:
            return self.recall(nprobe)
        column = self.per_query[:, min(max(nprobe, 1), self.nlist) - 1]
        return float(column.mean() - STANDARD_ERRORS * column.std(ddof=1) / np.sqrt(self.queries))

    def smallest_nprobe(self, target: float) -> int:
        """The fewest lists whose recall reaches `target` with the margin of `lower_bound`; nlist when none does."""
        if not self.queries:
            return 1
        means = self.per_query.mean(axis=0)
        spread = self.per_query.std(axis=0, ddof=1) if self.queries > 1 else np.zeros(self.nlist)
        reaching = np.flatnonzero(means - STANDARD_ERRORS * spread / np.sqrt(self.queries) >= target)
        return int(reaching[0]) + 1 if len(reaching) else self.nlist

    def points(self) -> list[list[float]]:
        """[nprobe, recall] at 1, 2, 4, ... up to nlist: the curve in a few numbers, for the manifest and logs."""
        nprobes = sorted({min(1 << power, self.nlist) for power in range(self.nlist.bit_length() + 1)})
        return [[nprobe, round(self.recall(nprobe), 4)] for nprobe in nprobes]


def measure_recall(index: faiss.IndexIVF, rng: np.random.Generator, queries: int = QUERIES, k: int = K) -> RecallCurve:
    """The recall curve of an IVF-Flat `index` (inner product) on `queries` of its own vectors drawn by `rng`."""
    lists = _Lists(index)
    queries = min(queries, lists.total - 1) if lists.total > k else 0
    k = min(k, lists.total - 1)
    if queries <= 0 or k <= 0:
        return RecallCurve(np.ones((0, index.nlist)), 0, k, np.empty(0, dtype=np.int64))
    query_ids, query_vectors = lists.rows_at(np.sort(rng.choice(lists.total, queries, replace=False)))
    neighbour_lists = _exact_neighbour_lists(lists, query_ids, query_vectors, k)
    # Each query's order of lists, as an IVF search ranks them: rank[q, list] = how many lists come before it.
    _, order = index.quantizer.search(query_vectors, index.nlist)
    rank = np.empty_like(order)
    rank[np.arange(queries)[:, None], order] = np.arange(index.nlist)[None, :]
    found_at = np.take_along_axis(rank, neighbour_lists, axis=1)  # (queries, k): the nprobe - 1 finding each
    per_query = np.zeros((queries, index.nlist), dtype=np.float32)
    np.add.at(per_query, (np.repeat(np.arange(queries), k), found_at.ravel()), 1.0 / k)
    return RecallCurve(np.cumsum(per_query, axis=1), queries, k, query_ids)


def _exact_neighbour_lists(lists: _Lists, query_ids: np.ndarray, query_vectors: np.ndarray, k: int) -> np.ndarray:
    """For each query, the inverted lists holding its exact top-k (its own row left out), by brute force."""
    queries = len(query_ids)
    best_scores = np.full((queries, k), -np.inf, dtype=np.float32)
    best_lists = np.zeros((queries, k), dtype=np.int64)
    for block_ids, block_vectors, block_lists in lists.blocks(BLOCK_ROWS):
        # faiss's brute force (BLAS, then a heap per query) takes half the time of numpy's product + argpartition.
        take = min(k + 1, len(block_ids))  # one more: the query's own row may be among them
        scores, rows = faiss.knn(query_vectors, block_vectors, take, metric=faiss.METRIC_INNER_PRODUCT)
        scores[block_ids[rows] == query_ids[:, None]] = -np.inf
        candidates = np.concatenate([best_scores, scores], axis=1)
        candidate_lists = np.concatenate([best_lists, block_lists[rows]], axis=1)
        keep = np.argpartition(-candidates, k - 1, axis=1)[:, :k]
        best_scores = np.take_along_axis(candidates, keep, axis=1)
        best_lists = np.take_along_axis(candidate_lists, keep, axis=1)
    return best_lists


class _Lists:
    """Zero-copy views of an IVF-Flat index's inverted lists (valid while the index does not change)."""

    def __init__(self, index: faiss.IndexIVF) -> None:
        invlists = index.invlists
        assert invlists is not None, "an IVF index always has inverted lists"
        self._invlists = invlists
        self._dimensions = index.d
        self.sizes = np.array([self._invlists.list_size(number) for number in range(index.nlist)], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)])
        self.total = int(self.starts[-1])

    def list(self, number: int) -> tuple[np.ndarray, np.ndarray]:
        """The ids and vectors of one list."""
        size = int(self.sizes[number])
        if not size:
            return np.empty(0, dtype=np.int64), np.empty((0, self._dimensions), dtype=np.float32)
        ids = faiss.rev_swig_ptr(self._invlists.get_ids(number), size)
        codes = faiss.rev_swig_ptr(self._invlists.get_codes(number), size * self._dimensions * 4)
        return ids, codes.view(np.float32).reshape(size, self._dimensions)

    def rows_at(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ids and vectors (copied) at global positions, counted through the lists in order."""
        numbers = np.searchsorted(self.starts, positions, side="right") - 1
        ids = np.empty(len(positions), dtype=np.int64)
        vectors = np.empty((len(positions), self._dimensions), dtype=np.float32)
        for slot, (number, position) in enumerate(zip(numbers, positions)):
            list_ids, list_vectors = self.list(int(number))
            offset = int(position - self.starts[number])
            ids[slot], vectors[slot] = list_ids[offset], list_vectors[offset]
        return ids, vectors

    def blocks(self, rows: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The lists gathered into blocks of about `rows` rows (one copied at a time): ids, vectors and each
        row's list number."""
        pending: list[int] = []
        pending_rows = 0
        for number in range(len(self.sizes)):
            if self.sizes[number]:
                pending.append(number)
                pending_rows += int(self.sizes[number])
            if pending and (pending_rows >= rows or number == len(self.sizes) - 1):
                parts = [self.list(item) for item in pending]
                yield (np.concatenate([part[0] for part in parts]), np.concatenate([part[1] for part in parts]),
                       np.repeat(np.array(pending, dtype=np.int64), self.sizes[pending]))
                pending, pending_rows = [], 0
