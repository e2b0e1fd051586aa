"""Semantic search, exact against approximate, at 100,000 and 1,000,000 stored vectors (issue 8).

The vectors are normalised 384-d float32 rows with the structure of real sentence embeddings: 64 topics,
3,000 clusters spread around them, cluster sizes from a lognormal, a quarter of the points mixed from two
clusters of a topic (texts that span two themes) and per-cluster spread, so a point's nearest neighbours
are mostly, not only, in its own cluster. (Isotropic random vectors have no meaningful neighbours.)

Every row takes the writer's own path: committed through `EmbeddingStore` into one database, indexed by
the writer's `build_index` and saved by `ModelIndex.save`; then the real service starts on it (its writer
loads the saved index rather than rebuilding it) and each query is one HTTP request to
/get_most_similar_string_from_database/ whose text is a stored row (its vector comes from the cache, so
the figure is search, not inference). Recall@10 is against a brute-force scan in numpy, the query row
left out as the service leaves it out.

For each size and kind it prints: index build time (read from the database + train + add) and save time,
p50/p99 latency through HTTP and of the FAISS search alone, recall@10, the commit rate of new rows, the
rate at which the writer's path adds them to a loaded index (a restart's catch-up), and memory (index
file, the build's RSS growth, gateway and writer RSS).

Usage: .venv/bin/python -m benchmarks.search [--quick] [--sizes 100000,1000000] [--queries 200]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import httpx
import numpy as np
import psutil

from modelstore.catalogue import load_catalogue
from modelstore.install import ensure_installed
from shared.index_manifest import APPROXIMATE, EXACT, model_index_dir
from shared.protocol import EmbeddingRow
from shared.schema import text_hash
from shared.settings import load_settings
from tests.harness import PROJECT_ROOT, Service
from workers.writer.index_build import build_index
from workers.writer.index_source import EmbeddingSource
from workers.writer.model_index import IndexPolicy, ModelIndex
from workers.writer.store import EmbeddingStore, RetryPolicy

MINILM = "all-minilm-l6-v2"
DIMENSIONS = 384
K = 10
INSERT_BATCH = 10_000
INCREMENTAL_ROWS = 10_000  # committed while no writer runs: a restart's catch-up
LIVE_COMMITS, LIVE_COMMIT_ROWS = 20, 128  # then commits of DB_WRITE_BATCH_SIZE rows, as under live traffic
WARM_UP_QUERIES = 20
BUILD_THREADS = 2  # as SEARCH_FAISS_THREADS=2 (the machine's cores); searches and adds use one thread


class ClusteredEmbeddings:
    """A fixed mixture (topics → clusters → points) to draw any number of points from."""

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


def row_text(row_id: int) -> str:
    return f"benchmark string {row_id}"


def commit(database_url: str, vectors: np.ndarray, first_id: int) -> float:
    """Commit rows through the writer's store in its batch size; returns rows per second."""
    store = EmbeddingStore(database_url, RetryPolicy(10, 0.05, 0.1))
    started = time.perf_counter()
    for start in range(0, len(vectors), INSERT_BATCH):
        rows = []
        for offset, vector in enumerate(vectors[start:start + INSERT_BATCH]):
            text = row_text(first_id + start + offset)
            rows.append(EmbeddingRow(text, text_hash(text), MINILM, vector.tobytes(), DIMENSIONS))
        store.insert_embeddings(rows)
    elapsed = time.perf_counter() - started
    store.close()
    return len(vectors) / elapsed


@dataclass
class Figures:
    kind: str
    build_seconds: float = 0.0
    save_seconds: float = 0.0
    lists: int = 0
    file_bytes: int = 0
    build_rss_bytes: int = 0
    faiss_p50_ms: float = 0.0
    http_p50_ms: float = 0.0
    http_p99_ms: float = 0.0
    recall: float = 0.0
    writer_load_seconds: float = 0.0
    gateway_rss_bytes: int = 0
    writer_rss_bytes: int = 0
    catch_up_rows_per_second: float = 0.0
    live_add_rows_per_second: float = 0.0
    load_seconds: float = 0.0


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray) -> list[set[int]]:
    """Brute-force top-K row ids (1-based, as the database assigns them) of each query row, itself left out."""
    scores = vectors[queries] @ vectors.T
    scores[np.arange(len(queries)), queries] = -np.inf
    top = np.argpartition(-scores, K, axis=1)[:, :K]
    return [set((row + 1).tolist()) for row in top]


def build_and_save(directory: Path, database_url: str, policy: IndexPolicy, nprobe: int, figures: Figures,
                   vectors: np.ndarray, queries: np.ndarray) -> None:
    process = psutil.Process()
    rss_before = process.memory_info().rss
    source = EmbeddingSource(database_url)
    faiss.omp_set_num_threads(BUILD_THREADS)
    started = time.perf_counter()
    index = build_index(source, MINILM, directory, policy)
    figures.build_seconds = time.perf_counter() - started
    source.close()
    assert index is not None and index.kind == figures.kind, "the policy chose another kind"
    figures.build_rss_bytes = process.memory_info().rss - rss_before
    figures.lists = index.lists
    started = time.perf_counter()
    manifest = index.save()
    figures.save_seconds = time.perf_counter() - started
    figures.file_bytes = (directory / manifest.file).stat().st_size
    searched = faiss.read_index(str(directory / manifest.file), faiss.IO_FLAG_MMAP_IFC)
    if isinstance(searched, faiss.IndexIVF):
        searched.nprobe = nprobe
    faiss.omp_set_num_threads(1)  # as the gateway searches and the indexer adds: one thread
    latencies = []
    for row in queries:
        started = time.perf_counter()
        searched.search(vectors[row:row + 1], K + 1)
        latencies.append(time.perf_counter() - started)
    figures.faiss_p50_ms = float(np.percentile(latencies, 50) * 1000)
    del index, searched


def serve_and_query(service: Service, figures: Figures, queries: np.ndarray, warm_up: np.ndarray,
                    truth: list[set[int]]) -> None:
    started = time.perf_counter()
    service.start()
    print(f"    service started in {time.perf_counter() - started:.1f}s", flush=True)
    try:
        log = (service.data_dir / "logs" / "writer.log").read_text()
        loaded = re.search(r"loaded generation \d+ \((\d+) vectors, (\w+)\) in ([0-9.]+)s", log)
        assert loaded and "built" not in log, "the service's writer rebuilt the index instead of loading it"
        figures.writer_load_seconds = float(loaded.group(3))
        latencies, recalls = [], []
        with httpx.Client(base_url=service.base_url, timeout=120) as client:
            for row in warm_up:
                client.post("/get_most_similar_string_from_database/", json={"text": row_text(int(row) + 1)})
            for row, expected in zip(queries, truth):
                started = time.perf_counter()
                response = client.post("/get_most_similar_string_from_database/",
                                       json={"text": row_text(int(row) + 1), "number_of_most_similar_strings_to_return": K})
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
                found = {int(hit["text"].rsplit(" ", 1)[1]) for hit in response.json()["results"]}
                recalls.append(len(found & expected) / K)
        figures.http_p50_ms = float(np.percentile(latencies, 50) * 1000)
        figures.http_p99_ms = float(np.percentile(latencies, 99) * 1000)
        figures.recall = float(np.mean(recalls))
        rss = {row["role"]: row["rss_bytes"] for row in service.status()["processes"]}
        figures.gateway_rss_bytes, figures.writer_rss_bytes = rss.get("gateway", 0), rss.get("writer", 0)
    finally:
        service.stop()


def catch_up(directory: Path, database_url: str, mixture: ClusteredEmbeddings, figures: Figures) -> None:
    """What a restarted writer does (load the saved index, add the rows committed since), then live traffic:
    small commits, each followed by the indexer's read-and-add, as `rows_committed` triggers it."""
    started = time.perf_counter()
    index = ModelIndex.load(MINILM, directory)
    figures.load_seconds = time.perf_counter() - started
    assert index is not None
    source = EmbeddingSource(database_url)
    figures.catch_up_rows_per_second = _add_new_rows(source, index)
    adding = 0.0
    for _ in range(LIVE_COMMITS):
        commit(database_url, mixture.sample(LIVE_COMMIT_ROWS), first_id=source.last_id(MINILM) + 1)
        started = time.perf_counter()
        _add_new_rows(source, index)
        adding += time.perf_counter() - started
    figures.live_add_rows_per_second = LIVE_COMMITS * LIVE_COMMIT_ROWS / adding
    source.close()


def _add_new_rows(source: EmbeddingSource, index: ModelIndex) -> float:
    added, started = 0, time.perf_counter()
    for chunk in source.chunks_after(MINILM, index.rows_covered, DIMENSIONS):
        index.add(chunk)
        added += len(chunk.ids)
    return added / (time.perf_counter() - started)


def run_size(size: int, query_count: int, work_dir: Path, models_dir: Path) -> list[Figures]:
    print(f"\n== {size:,} vectors ==", flush=True)
    root = work_dir / f"n{size}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    database_url = f"sqlite:///{root / 'embeddings.sqlite'}"
    mixture = ClusteredEmbeddings(seed=size)
    started = time.perf_counter()
    vectors = mixture.sample(size)
    print(f"  generated in {time.perf_counter() - started:.1f}s", flush=True)
    commit_rate = commit(database_url, vectors, first_id=1)
    print(f"  committed through the writer's store: {commit_rate:,.0f} rows/s", flush=True)
    rng = np.random.default_rng(1)
    chosen = rng.choice(size, query_count + WARM_UP_QUERIES, replace=False)
    queries, warm_up = chosen[:query_count], chosen[query_count:]
    truth = exact_neighbours(vectors, queries)
    results = []
    for kind, threshold in ((EXACT, size * 10), (APPROXIMATE, size // 2)):
        figures = Figures(kind)
        data_dir = root / kind
        overrides = {"DATA_DIR": str(data_dir), "DATABASE_URL": database_url,
                     "SEARCH_APPROXIMATE_ABOVE": str(threshold), "MODELS_TO_SERVE": MINILM}
        settings = load_settings(config_file=root / "no-config.env", overrides=overrides)
        policy = IndexPolicy(settings.search_approximate_above, settings.search_ivf_lists)
        directory = model_index_dir(settings.index_dir, MINILM)
        print(f"  {kind}: building", flush=True)
        build_and_save(directory, database_url, policy, settings.search_ivf_nprobe, figures, vectors, queries)
        print(f"  {kind}: built in {figures.build_seconds:.1f}s, saved in {figures.save_seconds:.1f}s; querying over HTTP",
              flush=True)
        service = Service(data_dir, models_dir, env_overrides={key: value for key, value in overrides.items()
                                                              if key != "DATA_DIR"})
        serve_and_query(service, figures, queries, warm_up, truth)
        results.append(figures)
    del vectors
    extra = mixture.sample(INCREMENTAL_ROWS)
    extra_rate = commit(database_url, extra, first_id=size + 1)
    print(f"  {INCREMENTAL_ROWS:,} more rows committed: {extra_rate:,.0f} rows/s", flush=True)
    for figures in results:
        catch_up(model_index_dir(root / figures.kind / "indexes", MINILM), database_url, mixture, figures)
    report(size, commit_rate, results)
    shutil.rmtree(root, ignore_errors=True)
    return results


def report(size: int, commit_rate: float, results: list[Figures]) -> None:
    mb = 1024 * 1024
    print(f"\n  {size:,} vectors, {DIMENSIONS}-d; rows committed at {commit_rate:,.0f}/s through the writer's store")
    header = (f"  {'kind':<12}{'build s':>9}{'save s':>8}{'lists':>7}{'HTTP p50':>10}{'HTTP p99':>10}{'FAISS p50':>11}"
              f"{'recall@10':>11}{'load s':>8}{'catch-up/s':>11}{'live add/s':>11}{'file MB':>9}{'build MB':>10}"
              f"{'gateway MB':>12}{'writer MB':>11}")
    print(header)
    for f in results:
        print(f"  {f.kind:<12}{f.build_seconds:>9.1f}{f.save_seconds:>8.1f}{f.lists:>7}{f.http_p50_ms:>8.1f}ms"
              f"{f.http_p99_ms:>8.1f}ms{f.faiss_p50_ms:>9.2f}ms{f.recall:>11.3f}{f.load_seconds:>8.2f}"
              f"{f.catch_up_rows_per_second:>11,.0f}{f.live_add_rows_per_second:>11,.0f}"
              f"{f.file_bytes / mb:>9.0f}{f.build_rss_bytes / mb:>10.0f}"
              f"{f.gateway_rss_bytes / mb:>12.0f}{f.writer_rss_bytes / mb:>11.0f}")
    print("  load s: a restarted writer reading the saved index; catch-up/s: the rows committed while it was down,"
          f" read and added ({INCREMENTAL_ROWS:,}; for exact, the first add also grows the flat array);"
          f" live add/s: {LIVE_COMMITS} commits of {LIVE_COMMIT_ROWS} rows, each read and added as the indexer does")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 vectors only")
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--work-dir", type=Path, default=PROJECT_ROOT / "data" / "bench-search")
    args = parser.parse_args()
    sizes = [100_000] if args.quick else [int(size) for size in args.sizes.split(",")]
    models_dir = Path(os.environ.get("LES_TEST_MODELS_DIR", PROJECT_ROOT / "data" / "test-models"))
    ensure_installed([MINILM], models_dir, load_catalogue(models_dir))
    summary = []
    for size in sizes:
        exact, approximate = run_size(size, args.queries, args.work_dir, models_dir)
        summary.append(f"n={size:,}: exact p50 {exact.http_p50_ms:.1f}ms recall {exact.recall:.3f}; approximate "
                       f"p50 {approximate.http_p50_ms:.1f}ms recall {approximate.recall:.3f} "
                       f"build {approximate.build_seconds:.0f}s, live add {approximate.live_add_rows_per_second:,.0f} rows/s")
    print("\nSUMMARY " + " | ".join(summary))


if __name__ == "__main__":
    main()
