"""The vector sets benchmarks/search.py searches: real sentences (and a million made from them), or synthetic clusters.

`real_corpora` gives the corpus of benchmarks/real_text.py as the served MiniLM model embedded it (~133k
sentences), then, for each larger size asked for, those rows plus perturbed copies (benchmarks/perturbed.py)
up to that size, each with a text of its own (its parent sentence and a number). `synthetic_corpora` gives
the clustered vectors the benchmark used before it had real text, which flatter an IVF index (recall 1.000
where real sentences gave 0.943 with the same settings).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from benchmarks.perturbed import PROFILE_QUERIES, noise_scale, perturbed, profile
from benchmarks.real_text import embedded_corpus

DIMENSIONS = 384


@dataclass
class Corpus:
    """Rows to store and search: texts and their unit vectors, and a source of more rows like them."""

    name: str
    texts: list[str]
    vectors: np.ndarray
    more: Callable[[int, int], tuple[list[str], np.ndarray]]  # (count, first row number) -> new rows

    @property
    def size(self) -> int:
        """How many rows."""
        return len(self.texts)


def real_corpora(work_dir: Path, models_dir: Path, model: str, sizes: list[int], noise: float) -> Iterator[Corpus]:
    """The real corpus, then for each size above it the corpus grown to that size with perturbed vectors whose
    noise is `noise` times the measured scale (benchmarks/perturbed.py)."""
    texts, vectors = embedded_corpus(work_dir / "real-text", models_dir, model)
    rng = np.random.default_rng(16)
    scale = noise_scale(vectors, rng) * noise
    print(f"  perturbation: gaussian noise of {scale:.4f} per component ({noise:g} × the median nearest-neighbour "
          f"distance of the real vectors, {scale * np.sqrt(vectors.shape[1]):.3f}, spread over "
          f"{vectors.shape[1]} components), renormalised", flush=True)

    def grow(count: int, first: int) -> tuple[list[str], np.ndarray, np.ndarray]:
        new, parents = perturbed(vectors, count, scale, rng)
        return [f"{texts[parent]} [{first + offset}]" for offset, parent in enumerate(parents)], new, parents

    def more(count: int, first: int) -> tuple[list[str], np.ndarray]:
        new_texts, new, _ = grow(count, first)
        return new_texts, new

    real = profile(vectors, np.arange(len(vectors)), rng)
    print(f"  neighbours of {PROFILE_QUERIES} real sentences among {len(texts):,}: median similarity of the 1st "
          f"{real.first_similarity:.3f}, of the 10th {real.tenth_similarity:.3f}", flush=True)
    yield Corpus("real", texts, vectors, more)
    for size in sizes:
        if size <= len(texts):
            continue
        new_texts, new_vectors, parents = grow(size - len(texts), len(texts) + 1)
        grown = np.concatenate([vectors, new_vectors])
        family = np.concatenate([np.arange(len(vectors)), parents])
        check = profile(grown, family, rng)
        print(f"  neighbours of {PROFILE_QUERIES} rows among {size:,} (real + perturbed): median similarity of the 1st "
              f"{check.first_similarity:.3f}, of the 10th {check.tenth_similarity:.3f}; {check.family_share:.0%} of a "
              "top 10 share the query's parent sentence", flush=True)
        yield Corpus("real+perturbed", texts + new_texts, grown, more)
        del grown


def synthetic_corpora(sizes: list[int]) -> Iterator[Corpus]:
    """Clustered vectors of each size (ClusteredEmbeddings), texts `benchmark string <n>`."""
    for size in sizes:
        mixture = ClusteredEmbeddings(seed=size)

        def more(count: int, first: int, mixture: ClusteredEmbeddings = mixture) -> tuple[list[str], np.ndarray]:
            return [f"benchmark string {first + offset}" for offset in range(count)], mixture.sample(count)

        texts, vectors = more(size, 1)
        yield Corpus("synthetic", texts, vectors, more)


class ClusteredEmbeddings:
    """A fixed mixture (64 topics → 3,000 clusters → points) to draw any number of normalised 384-d points from.

    Cluster sizes follow a lognormal, a quarter of the points mix two clusters of a topic (texts that span two
    themes), and the spread differs per cluster, so a point's neighbours are mostly, not only, in its cluster.
    """

    def __init__(self, seed: int = 0, topics: int = 64, clusters: int = 3000, mixed: float = 0.25) -> None:
        self._rng = np.random.default_rng(seed)
        rng = self._rng
        topic_centres = _normalise(rng.standard_normal((topics, DIMENSIONS)).astype(np.float32))
        self._owner = rng.integers(0, topics, clusters)
        distance = rng.uniform(0.5, 1.0, (clusters, 1)).astype(np.float32)
        noise = rng.standard_normal((clusters, DIMENSIONS)).astype(np.float32) / np.sqrt(DIMENSIONS)
        self._centres = _normalise(topic_centres[self._owner] + distance * noise)
        # Clusters grouped by topic, to draw a partner cluster of the same topic without a Python loop.
        self._by_topic = np.argsort(self._owner, kind="stable")
        self._topic_start = np.searchsorted(self._owner[self._by_topic], np.arange(topics))
        self._topic_size = np.bincount(self._owner, minlength=topics)
        self._spread = rng.uniform(0.5, 1.0, clusters).astype(np.float32)
        weights = rng.lognormal(0, 1, clusters)
        self._weights = weights / weights.sum()
        self._mixed = mixed

    def sample(self, count: int) -> np.ndarray:
        """`count` points of the mixture."""
        rng = self._rng
        out = np.empty((count, DIMENSIONS), dtype=np.float32)
        for start in range(0, count, 100_000):
            size = min(100_000, count - start)
            cluster = rng.choice(len(self._centres), size, p=self._weights)
            centre = self._centres[cluster].copy()
            mixed = np.flatnonzero(rng.random(size) < self._mixed)
            topic = self._owner[cluster[mixed]]
            pick = (rng.random(len(mixed)) * self._topic_size[topic]).astype(np.int64)
            partner = self._by_topic[self._topic_start[topic] + pick]
            share = rng.uniform(0.3, 0.7, (len(mixed), 1)).astype(np.float32)
            centre[mixed] = share * centre[mixed] + (1 - share) * self._centres[partner]
            noise = rng.standard_normal((size, DIMENSIONS)).astype(np.float32) / np.sqrt(DIMENSIONS)
            out[start:start + size] = _normalise(centre + self._spread[cluster, None] * noise)
        return out


def _normalise(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
