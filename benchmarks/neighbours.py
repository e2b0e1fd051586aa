"""Exact nearest neighbours of some stored rows among all of them, by brute force in blocks (benchmarks only)."""

from __future__ import annotations

import numpy as np

_CHUNK = 100_000


def nearest(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For each row index in `queries`, the inner products and row indexes of its `k` nearest rows of `vectors`,
    best first, the query row itself left out (as the service leaves the query text out)."""
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_rows = np.zeros((len(queries), k), dtype=np.int64)
    for start in range(0, len(vectors), _CHUNK):
        scores = vectors[queries] @ vectors[start:start + _CHUNK].T
        inside = (queries >= start) & (queries < start + _CHUNK)
        scores[np.flatnonzero(inside), queries[inside] - start] = -np.inf
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        candidates = np.concatenate([best_scores, np.take_along_axis(scores, top, axis=1)], axis=1)
        rows = np.concatenate([best_rows, top + start], axis=1)
        keep = np.argsort(-candidates, axis=1)[:, :k]
        best_scores, best_rows = np.take_along_axis(candidates, keep, axis=1), np.take_along_axis(rows, keep, axis=1)
    return best_scores, best_rows
