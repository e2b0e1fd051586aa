"""One model's FAISS index as the writer keeps it: exact or approximate, extended in place, saved atomically.

FAISS ids are `embeddings.id`, so a search result maps back to its text with one query.

Exact search is a flat inner-product scan (vectors are L2-normalised, so inner product = cosine). Above
SEARCH_APPROXIMATE_ABOVE rows it becomes an IVF-Flat index, chosen by measurement (benchmarks/search.py):
on this 2-core machine HNSW took 131 s to build 200k vectors, while IVF-Flat with sqrt(n) lists trains on a
sample in seconds, builds 1M vectors in about 20 s, adds a row by comparing it with the list centroids
only, and keeps the full vectors, so the similarities it returns are exact for the rows it finds.

How many lists a search probes is measured rather than fixed (`tune`, workers/writer/recall.py): after each
training, and again whenever the index has doubled since, the fewest lists that reach SEARCH_TARGET_RECALL
against exact search on a sample of the stored vectors. Lists trained on n rows stay while the index grows
to 4n, and the measurement follows that growth. On real sentences (MiniLM, 110k rows, 316 lists) 32 lists
gave recall 0.943 where synthetic clusters gave 1.000: no fixed number serves every corpus.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from shared.file_integrity import atomic_replace
from shared.index_manifest import (
    APPROXIMATE,
    EXACT,
    IndexManifest,
    index_file_name,
    read_manifest,
    write_manifest,
)
from workers.writer.index_source import VectorChunk
from workers.writer.recall import measure_recall

log = logging.getLogger(__name__)

# faiss warns below 39 training points per list; 50 gives k-means enough to place every centroid.
TRAINING_POINTS_PER_LIST = 50
# k-means iterations: 10 reach the recall of faiss's default 25 on our data (measured) in 40% of the time.
TRAINING_ITERATIONS = 10


@dataclass(frozen=True)
class Tuning:
    """How an approximate index is searched, as measured: see `ModelIndex.tune`. nprobe 0: not measured."""

    nprobe: int = 0
    recall: float = 0.0  # recall@10 against exact search measured with `nprobe`
    target_recall: float = 0.0
    tuned_on: int = 0  # vectors the index held then
    curve: list[list[float]] = field(default_factory=list)  # [nprobe, recall] at 1, 2, 4, ... lists


@dataclass(frozen=True)
class IndexPolicy:
    """When an index is approximate and how it is shaped (SEARCH_APPROXIMATE_ABOVE, SEARCH_IVF_LISTS)."""

    approximate_above: int
    ivf_lists: int = 0  # 0: sqrt(rows), the usual IVF rule
    retrain_growth: float = 4.0  # lists trained on n rows still partition 4n well; past that, retrain
    target_recall: float = 0.95  # SEARCH_TARGET_RECALL: recall@10 against exact that the chosen nprobe reaches
    retune_growth: float = 2.0  # re-measure nprobe when the index has doubled since it was last measured

    def kind_for(self, rows: int) -> str:
        """Exact search up to SEARCH_APPROXIMATE_ABOVE rows, approximate (IVF) above."""
        return APPROXIMATE if rows > self.approximate_above else EXACT

    def lists_for(self, rows: int) -> int:
        """The IVF lists of an index of `rows` rows: SEARCH_IVF_LISTS when set, else sqrt(rows); at least one."""
        return max(1, self.ivf_lists or round(math.sqrt(rows)))

    def fits(self, index: ModelIndex) -> bool:
        """Whether `index` is still the right kind and shape for its size."""
        if index.kind != self.kind_for(index.count):
            return False
        return index.kind == EXACT or index.count < index.trained_on * self.retrain_growth

    def needs_tuning(self, index: ModelIndex) -> bool:
        """Whether an approximate index's nprobe is unmeasured, measured for another target, or measured on
        fewer than half of its vectors."""
        if index.kind != APPROXIMATE:
            return False
        return (not index.tuned_on or index.target_recall != self.target_recall
                or index.count >= index.tuned_on * self.retune_growth)


class ModelIndex:
    """Owned by the writer's indexer thread; never shared with another thread while it changes."""

    def __init__(self, model: str, directory: Path, index: faiss.Index, kind: str, dimensions: int, *,
                 rows_covered: int = 0, generation: int = 0, lists: int = 0, trained_on: int = 0,
                 deletions_covered: int = 0, tuning: Tuning | None = None) -> None:
        self.model = model
        self.directory = directory
        self.index = index
        self.kind = kind
        self.dimensions = dimensions
        self.rows_covered = rows_covered
        self.generation = generation
        self.lists = lists
        self.trained_on = trained_on
        self.deletions_covered = deletions_covered
        self.tuning = tuning or Tuning()
        if isinstance(index, faiss.IndexIVF) and self.tuning.nprobe:
            index.nprobe = self.tuning.nprobe
        self.dirty = False

    @classmethod
    def exact(cls, model: str, directory: Path, dimensions: int, generation: int = 0) -> ModelIndex:
        """An empty flat inner-product index under explicit ids: exact search, with nothing to train."""
        index = faiss.IndexIDMap(faiss.IndexFlatIP(dimensions))
        return cls(model, directory, index, EXACT, dimensions, generation=generation)

    @classmethod
    def approximate(cls, model: str, directory: Path, sample: np.ndarray, lists: int, rows: int,
                    generation: int = 0) -> ModelIndex:
        """An IVF-Flat index for about `rows` rows, its lists trained on `sample` (spherical k-means: the
        vectors lie on the unit sphere)."""
        dimensions = int(sample.shape[1])
        lists = max(1, min(lists, len(sample)))
        quantizer = faiss.IndexFlatIP(dimensions)
        index = faiss.IndexIVFFlat(quantizer, dimensions, lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = TRAINING_ITERATIONS
        index.cp.spherical = True
        index.cp.max_points_per_centroid = TRAINING_POINTS_PER_LIST
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        return cls(model, directory, index, APPROXIMATE, dimensions, generation=generation, lists=lists,
                   trained_on=rows)

    @classmethod
    def load(cls, model: str, directory: Path) -> ModelIndex | None:
        """The saved index, or None when there is none or it does not match its manifest."""
        manifest = read_manifest(directory)
        if manifest is None or not (directory / manifest.file).is_file():
            return None
        try:
            index = faiss.read_index(str(directory / manifest.file))
        except RuntimeError:  # a damaged file: the caller rebuilds
            return None
        if index.ntotal != manifest.count or index.d != manifest.dimensions:
            return None
        return cls(model, directory, index, manifest.kind, manifest.dimensions, rows_covered=manifest.rows_covered,
                   generation=manifest.generation, lists=manifest.lists, trained_on=manifest.trained_on,
                   deletions_covered=manifest.deletions_covered,
                   tuning=Tuning(manifest.nprobe, manifest.recall, manifest.target_recall, manifest.tuned_on,
                                 manifest.recall_curve))

    @property
    def count(self) -> int:
        """How many vectors the index holds."""
        return int(self.index.ntotal)

    @property
    def tuned_on(self) -> int:
        """The vectors the index held when its nprobe was measured (0: never)."""
        return self.tuning.tuned_on

    @property
    def target_recall(self) -> float:
        """The recall its nprobe was chosen to reach."""
        return self.tuning.target_recall

    def tune(self, target_recall: float, seed: int | None = None) -> Tuning:
        """Measure recall against exact search and probe the fewest lists reaching `target_recall`."""
        if not isinstance(self.index, faiss.IndexIVF):
            return self.tuning
        started = time.monotonic()
        curve = measure_recall(self.index, np.random.default_rng(seed))
        nprobe = curve.smallest_nprobe(target_recall)
        self.index.nprobe = nprobe
        self.tuning = Tuning(nprobe, round(curve.recall(nprobe), 4), target_recall, self.count, curve.points())
        self.dirty = True
        reached = "" if curve.lower_bound(nprobe) >= target_recall else " (not reached: every list is probed)"
        log.info("index for %s: recall@%d against exact search %.3f with nprobe %d of %d lists, target %.3f%s; "
                 "measured on %d of %d vectors in %.2fs; recall by nprobe %s", self.model, curve.k,
                 self.tuning.recall, nprobe, curve.nlist, target_recall, reached, curve.queries, self.count,
                 time.monotonic() - started, " ".join(f"{int(p)}:{r:.3f}" for p, r in self.tuning.curve))
        return self.tuning

    def add(self, chunk: VectorChunk) -> None:
        """Add rows whose ids are all above `rows_covered` (the indexer reads them in id order)."""
        if not len(chunk.ids):
            return
        self.index.add_with_ids(np.ascontiguousarray(chunk.vectors), np.ascontiguousarray(chunk.ids))
        self.rows_covered = int(chunk.ids[-1])
        self.dirty = True

    def remove(self, ids: np.ndarray, deletions_covered: int) -> int:
        """Take deleted rows out (ids not in the index are ignored); how many were removed. Costs a scan of
        every id the index holds (FAISS keeps no id-to-position map for these kinds), whatever `len(ids)`."""
        removed = int(self.index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))))
        self.deletions_covered = deletions_covered
        self.dirty = True
        return removed

    def save(self) -> IndexManifest:
        """Write the next generation: index file, then manifest, each via temporary file + fsync + rename."""
        self.directory.mkdir(parents=True, exist_ok=True)
        generation = self.generation + 1
        name = index_file_name(generation)
        atomic_replace(self.directory / name, lambda staging: faiss.write_index(self.index, str(staging)))
        manifest = IndexManifest(model=self.model, generation=generation, rows_covered=self.rows_covered,
                                 count=self.count, dimensions=self.dimensions, kind=self.kind, file=name,
                                 saved_at=time.time(), lists=self.lists, trained_on=self.trained_on,
                                 deletions_covered=self.deletions_covered, nprobe=self.tuning.nprobe,
                                 recall=self.tuning.recall, target_recall=self.tuning.target_recall,
                                 tuned_on=self.tuning.tuned_on, recall_curve=self.tuning.curve)
        write_manifest(self.directory, manifest)
        self.generation = generation
        self.dirty = False
        self._remove_old_files(keep={name, index_file_name(generation - 1)})
        return manifest

    def _remove_old_files(self, keep: set[str]) -> None:
        # The previous generation stays: a gateway that has just read the old manifest may be opening it.
        # Also the staging files a crash during a save may have left.
        for path in [*self.directory.glob("index-*.faiss*"), *self.directory.glob(".index-*.tmp")]:
            if path.name not in keep:
                path.unlink(missing_ok=True)
