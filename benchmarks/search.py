"""Search on real text: exact against the tuned approximate index, at ~133k real sentences and at 1M (issues 8, 16).

The rows (benchmarks/search_corpora.py): real English sentences from the documentation Debian ships for Python
and Perl, embedded by the served MiniLM model through the running service's /get_embedding_vectors/
(benchmarks/real_text.py; ~11 min the first time, then read back from that service's store), and for 1M those
rows plus gaussian perturbations of them (benchmarks/perturbed.py, which also prints how their neighbourhoods
compare with the real ones). `--corpus synthetic` runs the clustered vectors used before, which flatter IVF.

Every row takes the writer's own path: committed through `EmbeddingStore` into one database, indexed by the
writer's `build_index` (which, for the approximate index, measures recall and chooses nprobe, as the writer
does) and saved by `ModelIndex.save`; then the real service starts on it (its writer loads the saved index
rather than rebuilding it) and each query is one HTTP request to /get_most_similar_string_from_database/
whose text is a stored row (its vector comes from the store, so the figure is search, not inference).
Recall@10 is against a brute-force scan in numpy, the query row left out as the service leaves it out.

For each size and kind it prints: build time (read from the database + train + add + measure nprobe) and
the measurement's share of it, save time, nprobe, recall@10 and p50/p99 latency of the FAISS search alone
(the saved file memory-mapped, one thread, as the gateway searches) and through HTTP, memory per row (index
file, writer and gateway RSS), the rate at which a restarted writer adds rows and at which live commits are
added; for the approximate index also the recall the writer measured and latency against nprobe, and the
keyword and hybrid modes through HTTP (their "recall" is the overlap with the exact semantic top 10).

Usage: .venv/bin/python -m benchmarks.search [--quick] [--corpus real|synthetic] [--sizes 1000000] [--queries 200]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import httpx
import numpy as np

from benchmarks.neighbours import nearest
from benchmarks.search_corpora import DIMENSIONS, Corpus, real_corpora, synthetic_corpora
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
from workers.writer.recall import measure_recall
from workers.writer.store import EmbeddingStore, RetryPolicy

MINILM = "all-minilm-l6-v2"
K = 10
INSERT_BATCH = 10_000
INCREMENTAL_ROWS = 10_000  # committed while no writer runs: a restart's catch-up
LIVE_COMMITS, LIVE_COMMIT_ROWS = 20, 128  # then commits of DB_WRITE_BATCH_SIZE rows, as under live traffic
WARM_UP_QUERIES = 20
BUILD_THREADS = 2  # as SEARCH_FAISS_THREADS=2 (the machine's cores); searches and adds use one thread
NPROBE_SWEEP = (8, 16, 32, 64, 128, 256)
OTHER_MODES = ("keyword", "hybrid")
SEARCH_PATH = "/get_most_similar_string_from_database/"


@dataclass
class ModeFigures:
    """One search mode through HTTP."""

    p50_ms: float = 0.0
    p99_ms: float = 0.0
    overlap: float = 0.0  # with the exact semantic top 10
    available: bool = True


@dataclass
class Figures:
    """What one kind of index measured at one size."""

    kind: str
    rows: int = 0
    build_seconds: float = 0.0
    tune_seconds: float = 0.0
    save_seconds: float = 0.0
    lists: int = 0
    nprobe: int = 0
    writer_recall: float = 0.0
    recall_curve: list[list[float]] = field(default_factory=list)
    target_recall: float = 0.0
    file_bytes: int = 0
    faiss_p50_ms: float = 0.0
    faiss_p99_ms: float = 0.0
    faiss_recall: float = 0.0
    sweep: list[tuple[int, float, float]] = field(default_factory=list)  # (nprobe, recall, p50 ms)
    http_p50_ms: float = 0.0
    http_p99_ms: float = 0.0
    recall: float = 0.0
    modes: dict[str, ModeFigures] = field(default_factory=dict)
    writer_load_seconds: float = 0.0
    gateway_rss_bytes: int = 0
    writer_rss_bytes: int = 0
    catch_up_rows_per_second: float = 0.0
    live_add_rows_per_second: float = 0.0
    load_seconds: float = 0.0


def commit(database_url: str, texts: list[str], vectors: np.ndarray) -> float:
    """Commit rows through the writer's store in its batch size; returns rows per second."""
    store = EmbeddingStore(database_url, RetryPolicy(10, 0.05, 0.1))
    started = time.perf_counter()
    for start in range(0, len(vectors), INSERT_BATCH):
        rows = [EmbeddingRow(text, text_hash(text), MINILM, vector.tobytes(), DIMENSIONS)
                for text, vector in zip(texts[start:start + INSERT_BATCH], vectors[start:start + INSERT_BATCH])]
        store.insert_embeddings(rows)
    elapsed = time.perf_counter() - started
    store.close()
    return len(vectors) / elapsed


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray) -> list[set[int]]:
    """Brute-force top-K row ids (1-based, as the database assigns them) of each query row, itself left out."""
    _, best_rows = nearest(vectors, queries, K)
    return [set((row + 1).tolist()) for row in best_rows]


def faiss_alone(index: faiss.Index, vectors: np.ndarray, queries: np.ndarray,
                truth: list[set[int]]) -> tuple[float, float, float]:
    """p50 and p99 (ms) and recall@10 of one-query searches of `index`, each query's own row left out."""
    latencies, recalls = [], []
    for row, expected in zip(queries, truth):
        started = time.perf_counter()
        _, ids = index.search(vectors[row:row + 1], K + 1)
        latencies.append(time.perf_counter() - started)
        found = [int(i) for i in ids[0] if i >= 0 and i != row + 1][:K]
        recalls.append(len(set(found) & expected) / K)
    return float(np.percentile(latencies, 50) * 1000), float(np.percentile(latencies, 99) * 1000), float(np.mean(recalls))


def build_and_save(directory: Path, database_url: str, policy: IndexPolicy, nprobe_setting: int, figures: Figures,
                   vectors: np.ndarray, queries: np.ndarray, truth: list[set[int]]) -> None:
    """Build and save the index as the writer does, then search the saved file as the gateway does."""
    source = EmbeddingSource(database_url)
    faiss.omp_set_num_threads(BUILD_THREADS)
    started = time.perf_counter()
    index = build_index(source, MINILM, directory, policy)
    figures.build_seconds = time.perf_counter() - started
    source.close()
    assert index is not None and index.kind == figures.kind, "the policy chose another kind"
    figures.target_recall = policy.target_recall
    figures.lists, figures.nprobe, figures.writer_recall = index.lists, index.tuning.nprobe, index.tuning.recall
    figures.recall_curve = index.tuning.curve
    if isinstance(index.index, faiss.IndexIVF):  # the build measured once; once more, timed on its own
        started = time.perf_counter()
        measure_recall(index.index, np.random.default_rng(1))
        figures.tune_seconds = time.perf_counter() - started
    started = time.perf_counter()
    manifest = index.save()
    figures.save_seconds = time.perf_counter() - started
    figures.file_bytes = (directory / manifest.file).stat().st_size
    del index
    searched = faiss.read_index(str(directory / manifest.file), faiss.IO_FLAG_MMAP_IFC)
    faiss.omp_set_num_threads(1)  # as the gateway searches and the indexer adds: one thread
    if isinstance(searched, faiss.IndexIVF):
        for nprobe in NPROBE_SWEEP:
            searched.nprobe = nprobe
            p50, _, recall = faiss_alone(searched, vectors, queries, truth)
            figures.sweep.append((nprobe, recall, p50))
        searched.nprobe = manifest.search_nprobe(nprobe_setting)  # as the gateway sets it
    faiss_alone(searched, vectors, queries[:WARM_UP_QUERIES], truth)  # pages of the mapped file in memory
    figures.faiss_p50_ms, figures.faiss_p99_ms, figures.faiss_recall = faiss_alone(searched, vectors, queries, truth)
    del searched


def query_http(client: httpx.Client, texts: list[str], row_of: dict[str, int], queries: np.ndarray,
               truth: list[set[int]], mode: str | None) -> ModeFigures:
    """p50/p99 and recall (or overlap with the exact top 10) of one search mode through HTTP."""
    latencies, recalls = [], []
    for row, expected in zip(queries, truth):
        body: dict[str, object] = {"text": texts[row], "number_of_most_similar_strings_to_return": K}
        if mode is not None:
            body["mode"] = mode
        started = time.perf_counter()
        response = client.post(SEARCH_PATH, json=body)
        latencies.append(time.perf_counter() - started)
        if mode is not None and (response.status_code == 422 or response.json().get("mode") != mode):
            return ModeFigures(available=False)  # TODO(issue 16, item 3): the mode is not served yet
        assert response.status_code == 200, response.text
        found = {row_of[hit["text"]] for hit in response.json()["results"]}
        recalls.append(len(found & expected) / K)
    return ModeFigures(float(np.percentile(latencies, 50) * 1000), float(np.percentile(latencies, 99) * 1000),
                       float(np.mean(recalls)))


def serve_and_query(service: Service, figures: Figures, corpus: Corpus, row_of: dict[str, int], queries: np.ndarray,
                    warm_up: np.ndarray, truth: list[set[int]]) -> None:
    """Start the service on the saved index and query it over HTTP."""
    started = time.perf_counter()
    service.start()
    print(f"    service started in {time.perf_counter() - started:.1f}s", flush=True)
    try:
        # The writer may still be loading a large index when the gateway is ready: wait for its log line.
        pattern = re.compile(r"loaded generation \d+ \((\d+) vectors, (\w+)\) in ([0-9.]+)s")
        deadline = time.monotonic() + 120
        while True:
            log = (service.data_dir / "logs" / "writer.log").read_text()
            loaded = pattern.search(log)
            if loaded or "built" in log or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert loaded and "built" not in log, "the service's writer rebuilt the index instead of loading it"
        figures.writer_load_seconds = float(loaded.group(3))
        with httpx.Client(base_url=service.base_url, timeout=120) as client:
            for row in warm_up:
                client.post(SEARCH_PATH, json={"text": corpus.texts[row]})
            semantic = query_http(client, corpus.texts, row_of, queries, truth, None)
            figures.http_p50_ms, figures.http_p99_ms, figures.recall = semantic.p50_ms, semantic.p99_ms, semantic.overlap
            if figures.kind == APPROXIMATE:
                for mode in OTHER_MODES:
                    figures.modes[mode] = query_http(client, corpus.texts, row_of, queries, truth, mode)
        rss = {row["role"]: row["rss_bytes"] for row in service.status()["processes"]}
        figures.gateway_rss_bytes, figures.writer_rss_bytes = rss.get("gateway", 0), rss.get("writer", 0)
    finally:
        service.stop()


def catch_up(directory: Path, database_url: str, corpus: Corpus, figures: Figures) -> None:
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
        first = source.count_after(MINILM, 0) + 1
        commit(database_url, *corpus.more(LIVE_COMMIT_ROWS, first))
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


def run_size(corpus: Corpus, query_count: int, work_dir: Path, models_dir: Path) -> list[Figures]:
    """Store the corpus, then build, search and serve it with an exact and an approximate index."""
    size = corpus.size
    print(f"\n== {size:,} vectors ({corpus.name}) ==", flush=True)
    root = work_dir / f"n{size}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    database_url = f"sqlite:///{root / 'embeddings.sqlite'}"
    commit_rate = commit(database_url, corpus.texts, corpus.vectors)
    print(f"  committed through the writer's store: {commit_rate:,.0f} rows/s", flush=True)
    row_of = {text: row + 1 for row, text in enumerate(corpus.texts)}
    rng = np.random.default_rng(1)
    chosen = rng.choice(size, query_count + WARM_UP_QUERIES, replace=False)
    queries, warm_up = chosen[:query_count], chosen[query_count:]
    truth = exact_neighbours(corpus.vectors, queries)
    results = []
    for kind, threshold in ((EXACT, size * 10), (APPROXIMATE, size // 2)):
        figures = Figures(kind, rows=size)
        data_dir = root / kind
        overrides = {"DATA_DIR": str(data_dir), "DATABASE_URL": database_url,
                     "SEARCH_APPROXIMATE_ABOVE": str(threshold), "MODELS_TO_SERVE": MINILM}
        settings = load_settings(config_file=root / "no-config.env", overrides=overrides)
        policy = IndexPolicy(settings.search_approximate_above, settings.search_ivf_lists,
                             target_recall=settings.search_target_recall)
        directory = model_index_dir(settings.index_dir, MINILM)
        print(f"  {kind}: building", flush=True)
        build_and_save(directory, database_url, policy, settings.search_ivf_nprobe, figures, corpus.vectors, queries, truth)
        print(f"  {kind}: built in {figures.build_seconds:.1f}s, saved in {figures.save_seconds:.1f}s; querying over HTTP",
              flush=True)
        service = Service(data_dir, models_dir, env_overrides={key: value for key, value in overrides.items()
                                                              if key != "DATA_DIR"})
        serve_and_query(service, figures, corpus, row_of, queries, warm_up, truth)
        results.append(figures)
    extra_rate = commit(database_url, *corpus.more(INCREMENTAL_ROWS, size + 1))
    print(f"  {INCREMENTAL_ROWS:,} more rows committed: {extra_rate:,.0f} rows/s", flush=True)
    for figures in results:
        catch_up(model_index_dir(root / figures.kind / "indexes", MINILM), database_url, corpus, figures)
    report(corpus, commit_rate, results)
    shutil.rmtree(root, ignore_errors=True)
    return results


def report(corpus: Corpus, commit_rate: float, results: list[Figures]) -> None:
    """Print one size's table."""
    mb = 1024 * 1024
    print(f"\n  {corpus.size:,} vectors ({corpus.name}), {DIMENSIONS}-d; rows committed at {commit_rate:,.0f}/s through "
          "the writer's store")
    print(f"  {'kind':<12}{'build s':>9}{'tune s':>8}{'save s':>8}{'lists':>7}{'nprobe':>8}{'FAISS p50':>11}{'p99':>9}"
          f"{'recall':>8}{'HTTP p50':>10}{'p99':>9}{'recall':>8}{'B/row file':>12}{'writer':>8}{'gateway':>9}"
          f"{'load s':>8}{'catch-up/s':>11}{'live add/s':>11}")
    for f in results:
        print(f"  {f.kind:<12}{f.build_seconds:>9.1f}{f.tune_seconds:>8.1f}{f.save_seconds:>8.1f}{f.lists:>7}{f.nprobe:>8}"
              f"{f.faiss_p50_ms:>9.2f}ms{f.faiss_p99_ms:>7.2f}ms{f.faiss_recall:>8.3f}{f.http_p50_ms:>8.1f}ms"
              f"{f.http_p99_ms:>7.1f}ms{f.recall:>8.3f}{f.file_bytes / f.rows:>12,.0f}{f.writer_rss_bytes / f.rows:>8,.0f}"
              f"{f.gateway_rss_bytes / f.rows:>9,.0f}{f.load_seconds:>8.2f}{f.catch_up_rows_per_second:>11,.0f}"
              f"{f.live_add_rows_per_second:>11,.0f}")
    rss = ", ".join(f"{f.kind} writer {f.writer_rss_bytes / mb:,.0f} MB, gateway {f.gateway_rss_bytes / mb:,.0f} MB"
                    for f in results)
    print("  recall: recall@10 against exact, the query row left out; B/row: index file, writer RSS and gateway RSS per"
          f" row (RSS: {rss}); tune s: measuring recall for every nprobe once more, the part of build s that chose"
          f" nprobe; load s: a restarted writer reading the saved index; catch-up/s: {INCREMENTAL_ROWS:,} rows committed"
          f" while it was down, read and added; live add/s: {LIVE_COMMITS} commits of {LIVE_COMMIT_ROWS} rows")
    for f in results:
        if f.kind != APPROXIMATE:
            continue
        print(f"  approximate: the writer measured recall {f.writer_recall:.3f} at nprobe {f.nprobe} (target "
              f"{f.target_recall:g}); its curve: "
              + " ".join(f"{int(p)}:{r:.3f}" for p, r in f.recall_curve))
        print("  FAISS alone against nprobe (these queries): "
              + "  ".join(f"{p}: recall {r:.3f} p50 {ms:.2f}ms" for p, r, ms in f.sweep))
        for mode, m in f.modes.items():
            if not m.available:
                print(f"  {mode}: not served by this checkout yet (TODO: `mode` of {SEARCH_PATH}, issue 16 item 3)")
            else:
                print(f"  {mode} through HTTP: p50 {m.p50_ms:.1f}ms p99 {m.p99_ms:.1f}ms, overlap with the exact semantic"
                      f" top 10 {m.overlap:.3f} (search alone: not separable from the request here)")


def main() -> None:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the real corpus only (synthetic: 100,000 vectors)")
    parser.add_argument("--corpus", choices=("real", "synthetic"), default="real")
    parser.add_argument("--sizes", default="", help="real: sizes above the corpus (default 1000000); "
                        "synthetic: every size (default 100000,1000000)")
    parser.add_argument("--noise", type=float, default=1.5,
                        help="perturbation noise in units of the real median nearest-neighbour distance")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--work-dir", type=Path, default=PROJECT_ROOT / "data" / "bench-search")
    args = parser.parse_args()
    default_sizes = "1000000" if args.corpus == "real" else "100000,1000000"
    sizes = [int(size) for size in (args.sizes or default_sizes).split(",")]
    if args.quick:
        sizes = [] if args.corpus == "real" else [100_000]
    models_dir = Path(os.environ.get("LES_TEST_MODELS_DIR", PROJECT_ROOT / "data" / "test-models"))
    ensure_installed([MINILM], models_dir, load_catalogue(models_dir))
    corpora = (real_corpora(args.work_dir, models_dir, MINILM, sizes, args.noise) if args.corpus == "real"
               else synthetic_corpora(sizes))
    summary = []
    for corpus in corpora:
        exact, approximate = run_size(corpus, args.queries, args.work_dir, models_dir)
        summary.append(f"n={corpus.size:,} {corpus.name}: exact FAISS p50 {exact.faiss_p50_ms:.1f}ms HTTP p50 "
                       f"{exact.http_p50_ms:.1f}ms; approximate nprobe {approximate.nprobe}/{approximate.lists} recall "
                       f"{approximate.recall:.3f} FAISS p50 {approximate.faiss_p50_ms:.2f}ms HTTP p50 "
                       f"{approximate.http_p50_ms:.1f}ms build {approximate.build_seconds:.0f}s")
    print("\nSUMMARY " + " | ".join(summary))


if __name__ == "__main__":
    main()
