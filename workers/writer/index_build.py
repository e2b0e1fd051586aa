"""Building one model's index from the database: the kind its size calls for, then every stored row.

The writer's indexer calls this when a model has no usable saved index (and when an index outgrows its
kind); benchmarks/search.py calls it too, so what it measures is what the writer does. An approximate index
leaves with its nprobe measured (`ModelIndex.tune`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from shared.index_manifest import APPROXIMATE
from workers.writer.index_source import EmbeddingSource
from workers.writer.model_index import TRAINING_POINTS_PER_LIST, IndexPolicy, ModelIndex


def build_index(source: EmbeddingSource, model: str, directory: Path, policy: IndexPolicy, generation: int = 0,
                cancelled: Callable[[], bool] = lambda: False) -> ModelIndex | None:
    """A new, unsaved index of every stored row of `model`; None when it has no rows or `cancelled()` turned true.

    `generation` continues the numbering of an index being replaced, so that readers see the new one as newer.
    """
    dimensions = source.dimensions(model)
    if dimensions is None:
        return None
    last_id = source.last_id(model)
    rows = source.count_after(model, 0)
    if policy.kind_for(rows) == APPROXIMATE:
        lists = policy.lists_for(rows)
        sample = source.sample(model, last_id, every=rows // (lists * TRAINING_POINTS_PER_LIST), dimensions=dimensions)
        index = ModelIndex.approximate(model, directory, sample, lists, rows, generation)
    else:
        index = ModelIndex.exact(model, directory, dimensions, generation)
    for chunk in source.chunks_after(model, 0, dimensions):
        if cancelled():
            return None
        index.add(chunk)
    if policy.needs_tuning(index):
        index.tune(policy.target_recall)
    index.dirty = True
    return index
