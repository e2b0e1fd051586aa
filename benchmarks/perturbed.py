"""More vectors like real sentence vectors, for a million rows when embedding a million sentences is too slow here.

Each new vector is a real sentence's vector (its "parent", drawn uniformly) plus gaussian noise, renormalised.
The noise's scale is measured, not guessed: a new vector lies as far from its parent as the median real
sentence lies from its nearest real neighbour (`noise_scale`), so it is a plausible new sentence about the same
thing rather than a copy. `profile` is the check that the result still looks like real data and not like
clusters of near-copies: for sample queries it gives the median similarity of the 1st and 10th nearest
neighbour and the share of a query's top 10 that are its own family (its parent, its siblings, its children),
to compare with the real corpus alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmarks.neighbours import nearest

PROFILE_QUERIES = 300
K = 10
_CHUNK = 100_000


@dataclass(frozen=True)
class Profile:
    """What the neighbourhoods of sample queries look like."""

    first_similarity: float  # median similarity of a query's nearest neighbour (itself left out)
    tenth_similarity: float  # median similarity of its 10th
    family_share: float  # of its top 10, the share that share its parent (0 for a real corpus alone)


def nearest_neighbour_distance(vectors: np.ndarray, rng: np.random.Generator, queries: int = 2000) -> float:
    """The median Euclidean distance from a real vector to its nearest other real vector."""
    chosen = rng.choice(len(vectors), min(queries, len(vectors)), replace=False)
    best = nearest(vectors, chosen, 1)[0][:, 0]
    return float(np.median(np.sqrt(np.maximum(0.0, 2.0 - 2.0 * best))))


def noise_scale(vectors: np.ndarray, rng: np.random.Generator) -> float:
    """The per-component standard deviation of gaussian noise whose length is the median nearest-neighbour distance."""
    return nearest_neighbour_distance(vectors, rng) / np.sqrt(vectors.shape[1])


def perturbed(vectors: np.ndarray, count: int, scale: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`count` new unit vectors, each a random real vector plus N(0, scale²) per component, and their parents' rows."""
    parents = rng.integers(0, len(vectors), count)
    out = np.empty((count, vectors.shape[1]), dtype=np.float32)
    for start in range(0, count, _CHUNK):
        rows = parents[start:start + _CHUNK]
        noisy = vectors[rows] + rng.normal(0.0, scale, (len(rows), vectors.shape[1])).astype(np.float32)
        out[start:start + len(rows)] = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    return out, parents


def profile(vectors: np.ndarray, family: np.ndarray, rng: np.random.Generator,
            queries: int = PROFILE_QUERIES) -> Profile:
    """The neighbourhoods of `queries` random rows of `vectors`; `family[i]` names row i's real parent (a real row
    is its own)."""
    chosen = rng.choice(len(vectors), queries, replace=False)
    top_scores, top_rows = nearest(vectors, chosen, K)
    share = float(np.mean(family[top_rows] == family[chosen][:, None]))
    return Profile(float(np.median(top_scores[:, 0])), float(np.median(top_scores[:, K - 1])), share)
