"""Reciprocal rank fusion: one ranking from the semantic and the keyword rankings of a hybrid search.

Each list gives a string 1 / (RRF_K + rank); the sums rank the union. RRF needs no calibration between cosine
similarities and BM25 scores (which live on unrelated scales), which is why it is the usual choice; k = 60 is
the constant of the paper that introduced it (Cormack, Clarke and Büttcher, SIGIR 2009).
"""

from __future__ import annotations

from dataclasses import dataclass

RRF_K = 60


@dataclass(frozen=True)
class Ranked:
    """One result of any mode: the string, its score in that mode, and what each part said of it."""

    text: str
    score: float  # semantic: cosine similarity; keyword: BM25 (or ts_rank_cd); hybrid: the fused score
    similarity: float | None = None  # cosine similarity to the query, when the semantic part found it
    semantic_rank: int | None = None  # 1-based
    keyword_rank: int | None = None  # 1-based


def fuse(semantic: list[tuple[str, float]], keyword: list[tuple[str, float]], k: int) -> list[Ranked]:
    """The `k` best of both rankings (each best first) by reciprocal rank fusion.

    Equal fused scores (a string first in one list and absent from the other, against another one in the
    same position) go to the string found by both, then the better single rank, then the keyword match: a
    query's exact rare word is a stronger sign than a near vector.
    """
    similarity = dict(semantic)
    semantic_ranks = {text: rank for rank, (text, _) in enumerate(semantic, 1)}
    keyword_ranks = {text: rank for rank, (text, _) in enumerate(keyword, 1)}
    results = []
    for text in dict.fromkeys([*semantic_ranks, *keyword_ranks]):
        ranks = [rank for rank in (semantic_ranks.get(text), keyword_ranks.get(text)) if rank is not None]
        score = sum(1 / (RRF_K + rank) for rank in ranks)
        results.append(Ranked(text, score, similarity.get(text), semantic_ranks.get(text), keyword_ranks.get(text)))
    results.sort(key=_order)
    return results[:k]


def _order(result: Ranked) -> tuple[float, int, int, bool]:
    ranks = [rank for rank in (result.semantic_rank, result.keyword_rank) if rank is not None]
    return (-result.score, -len(ranks), min(ranks), result.keyword_rank is None)
