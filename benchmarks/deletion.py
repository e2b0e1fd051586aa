"""What deleting costs at 1M rows (issue 16): the writer's transaction and the FAISS index's remove_ids.

A deleted row leaves the store in the writer's transaction (the row, its memberships, its FTS entry by trigger,
a `deletions` log entry), then leaves each FAISS index the indexer keeps: `remove_ids` scans every id the
index holds (neither the flat nor the IVF index keeps an id-to-position map), so its cost grows with the
index, not with the number deleted; a batch of deletes costs about what one does.

Vectors are random unit vectors: removing by id never looks at them, so real text would cost the same.

Usage: .venv/bin/python -m benchmarks.deletion [--rows 1000000] [--batches 1,100,10000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from shared.protocol import Delete, EmbeddingRow
from shared.schema import text_hash
from workers.writer.deletion import delete_stored
from workers.writer.store import EmbeddingStore, RetryPolicy

DIMENSIONS = 384
MODEL = "bench"


def unit_vectors(count: int, seed: int = 0) -> np.ndarray:
    """`count` random unit vectors of DIMENSIONS."""
    vectors = np.random.default_rng(seed).standard_normal((count, DIMENSIONS), dtype=np.float32)
    faiss.normalize_L2(vectors)
    return vectors


def faiss_removal(rows: int, batches: list[int]) -> None:
    """remove_ids on a flat and an IVF index of `rows` vectors, for batches of each size."""
    vectors = unit_vectors(rows)
    ids = np.arange(1, rows + 1, dtype=np.int64)
    flat = faiss.IndexIDMap(faiss.IndexFlatIP(DIMENSIONS))
    flat.add_with_ids(vectors, ids)
    lists = int(np.sqrt(rows))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIMENSIONS), DIMENSIONS, lists, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.niter = 4
    ivf.train(vectors[:lists * 50])
    ivf.add_with_ids(vectors, ids)
    rng = np.random.default_rng(1)
    for name, index in (("flat", flat), (f"IVF-Flat ({lists} lists)", ivf)):
        for batch in batches:
            doomed = rng.choice(ids, size=batch, replace=False)
            started = time.perf_counter()
            removed = index.remove_ids(faiss.IDSelectorBatch(doomed))
            elapsed = time.perf_counter() - started
            print(f"faiss {name:24s} {index.ntotal + removed:>9,} vectors: remove {batch:>6,} ids in "
                  f"{elapsed * 1000:8.1f} ms ({removed:,} removed)")


COLLECTION_ROWS = 10_000


def store_removal(rows: int) -> None:
    """The writer's delete transaction on a SQLite store of `rows` rows: one string, then a collection of
    COLLECTION_ROWS texts."""
    with tempfile.TemporaryDirectory() as directory:
        store = EmbeddingStore(f"sqlite:///{Path(directory) / 'bench.sqlite'}", RetryPolicy(3, 0.05, 0.1))
        blob = unit_vectors(1)[0].tobytes()
        started = time.perf_counter()
        for start in range(0, rows, 20_000):
            store.insert_embeddings([
                EmbeddingRow(text=f"sentence number {i}", text_hash=text_hash(f"sentence number {i}"),
                             model_name=MODEL, embedding=blob, dimensions=DIMENSIONS,
                             collection="big" if i < COLLECTION_ROWS else "")
                for i in range(start, min(rows, start + 20_000))])
        print(f"store: {rows:,} rows written in {time.perf_counter() - started:.0f} s")
        for number, (target, name) in enumerate([("string", text_hash(f"sentence number {rows - 1}")),
                                                 ("collection", "big")], 1):
            started = time.perf_counter()
            reply = delete_stored(store, Delete(number, target, name, MODEL if target == "string" else ""))
            print(f"store: delete a {target} of {len(reply.rows):,} rows from {rows:,} in "
                  f"{(time.perf_counter() - started) * 1000:.1f} ms")
        store.close()


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batches", default="1,100,10000")
    parser.add_argument("--no-store", action="store_true", help="FAISS only")
    args = parser.parse_args()
    batches = [int(size) for size in args.batches.split(",")]
    faiss.omp_set_num_threads(1)  # as the writer's indexer removes
    faiss_removal(args.rows, batches)
    if not args.no_store:
        store_removal(args.rows)


if __name__ == "__main__":
    main()
