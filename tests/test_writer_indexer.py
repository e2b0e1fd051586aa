"""The writer's search indexes: built from the database, extended as rows commit, saved, reloaded on restart."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import faiss
import numpy as np
import pytest

from shared.index_manifest import APPROXIMATE, EXACT, IndexManifest, model_index_dir, read_manifest
from shared.protocol import EmbeddingRow
from shared.schema import text_hash
from shared.settings import Settings, load_settings
from workers.writer.indexer import Indexer
from workers.writer.recall import measure_recall
from workers.writer.store import EmbeddingStore, RetryPolicy

MODEL = "test-model"
DIMENSIONS = 32


def settings_for(data_dir: Path, **overrides: str) -> Settings:
    values = {"DATA_DIR": str(data_dir), "SEARCH_INDEX_SAVE_INTERVAL_MS": "50", **overrides}
    return load_settings(config_file=data_dir / "no-config.env", overrides=values)


def clustered_vectors(count: int, seed: int, clusters: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIMENSIONS)).astype(np.float32)
    vectors = centres[rng.integers(0, clusters, count)] + 0.3 * rng.standard_normal((count, DIMENSIONS)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def insert(settings: Settings, vectors: np.ndarray, prefix: str) -> None:
    store = EmbeddingStore(settings.database_url, RetryPolicy(3, 0.01, 0.1))
    rows = [EmbeddingRow(f"{prefix} {number}", text_hash(f"{prefix} {number}"), MODEL, vector.tobytes(), DIMENSIONS)
            for number, vector in enumerate(vectors)]
    store.insert_embeddings(rows)
    store.close()


def wait_for_manifest(settings: Settings, predicate: Callable[[IndexManifest], bool], timeout: float = 20.0) -> IndexManifest:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        manifest = read_manifest(model_index_dir(settings.index_dir, MODEL))
        if manifest is not None and predicate(manifest):
            return manifest
        time.sleep(0.05)
    raise AssertionError(f"no manifest matching the condition within {timeout}s")


def open_saved(settings: Settings, manifest: IndexManifest) -> faiss.Index:
    return faiss.read_index(str(model_index_dir(settings.index_dir, MODEL) / manifest.file))


@contextmanager
def running_indexer(settings: Settings) -> Iterator[Indexer]:
    indexer = Indexer(settings)
    indexer.start()
    try:
        yield indexer
    finally:
        indexer.stop(timeout=10)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_for(tmp_path)


def test_an_index_is_built_from_the_database_and_saved_with_its_manifest(settings: Settings) -> None:
    vectors = clustered_vectors(50, seed=1)
    insert(settings, vectors, "row")
    with running_indexer(settings):
        manifest = wait_for_manifest(settings, lambda m: m.count == 50)
    assert (manifest.kind, manifest.dimensions, manifest.rows_covered) == (EXACT, DIMENSIONS, 50)
    _, ids = open_saved(settings, manifest).search(vectors[7:8], 1)
    assert ids[0][0] == 8  # FAISS ids are embeddings.id (ids start at 1)


def test_rows_committed_while_running_are_added_to_the_index(settings: Settings) -> None:
    insert(settings, clustered_vectors(10, seed=1), "first")
    with running_indexer(settings) as indexer:
        first = wait_for_manifest(settings, lambda m: m.count == 10)
        insert(settings, clustered_vectors(5, seed=2), "second")
        indexer.rows_committed([MODEL])
        second = wait_for_manifest(settings, lambda m: m.count == 15, timeout=2.0)
    assert second.generation > first.generation and second.rows_covered == 15


def test_a_restart_loads_the_saved_index_and_adds_only_newer_rows(settings: Settings,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    insert(settings, clustered_vectors(30, seed=1), "before")
    with running_indexer(settings):
        saved = wait_for_manifest(settings, lambda m: m.count == 30)
    insert(settings, clustered_vectors(4, seed=2), "while stopped")
    caplog.set_level(logging.INFO, logger="workers.writer.indexer")
    caplog.clear()
    with running_indexer(settings):
        manifest = wait_for_manifest(settings, lambda m: m.count == 34)
    assert f"loaded generation {saved.generation}" in caplog.text
    assert "built" not in caplog.text
    assert manifest.generation == saved.generation + 1


def test_a_damaged_index_file_is_rebuilt_from_the_database(settings: Settings) -> None:
    insert(settings, clustered_vectors(20, seed=1), "row")
    with running_indexer(settings):
        saved = wait_for_manifest(settings, lambda m: m.count == 20)
    (model_index_dir(settings.index_dir, MODEL) / saved.file).write_bytes(b"not an index")
    with running_indexer(settings):
        rebuilt = wait_for_manifest(settings, lambda m: m.generation > saved.generation)
    assert rebuilt.count == 20


def test_only_the_current_and_previous_generation_files_are_kept(settings: Settings) -> None:
    insert(settings, clustered_vectors(0, seed=0), "none")  # creates the database, as the writer's store does
    with running_indexer(settings) as indexer:
        for batch in range(4):
            insert(settings, clustered_vectors(3, seed=batch), f"batch {batch}")
            indexer.rows_committed([MODEL])
            def reached(m: IndexManifest, expected: int = 3 * (batch + 1)) -> bool:
                return m.count == expected
            wait_for_manifest(settings, reached)
    files = sorted(path.name for path in model_index_dir(settings.index_dir, MODEL).glob("index-*"))
    assert len(files) == 2


def test_above_the_threshold_the_index_is_approximate_with_recall_of_at_least_095(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, SEARCH_APPROXIMATE_ABOVE="1000")
    vectors = clustered_vectors(3000, seed=3, clusters=60)
    insert(settings, vectors, "row")
    with running_indexer(settings):
        manifest = wait_for_manifest(settings, lambda m: m.count == 3000)
    assert manifest.kind == APPROXIMATE and manifest.lists == round(3000 ** 0.5)
    index = open_saved(settings, manifest)
    faiss.extract_index_ivf(index).nprobe = manifest.search_nprobe(settings.search_ivf_nprobe)
    queries = vectors[:100]
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10] + 1  # ids start at 1
    _, found = index.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)])
    assert recall >= 0.95


def test_an_exact_index_that_outgrows_the_threshold_becomes_approximate(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, SEARCH_APPROXIMATE_ABOVE="100")
    insert(settings, clustered_vectors(80, seed=1), "small")
    with running_indexer(settings) as indexer:
        wait_for_manifest(settings, lambda m: m.count == 80 and m.kind == EXACT)
        insert(settings, clustered_vectors(400, seed=2), "grown")
        indexer.rows_committed([MODEL])
        grown = wait_for_manifest(settings, lambda m: m.count == 480)
    assert grown.kind == APPROXIMATE


def noisy_clusters(count: int, seed: int) -> np.ndarray:
    """Clusters so wide that an IVF index needs about a quarter of its lists for recall@10 of 0.95 (few miss)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, DIMENSIONS)).astype(np.float32)
    vectors = centres[rng.integers(0, 20, count)] + 1.5 * rng.standard_normal((count, DIMENSIONS)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def true_recall(index: faiss.Index, vectors: np.ndarray, nprobe: int, queries: np.ndarray) -> float:
    """Recall@10 of `index` at `nprobe` for the stored rows `queries` (positions; ids are positions + 1), each
    query's own row left out of both sides."""
    faiss.extract_index_ivf(index).nprobe = nprobe
    scores = vectors[queries] @ vectors.T
    scores[np.arange(len(queries)), queries] = -np.inf
    exact = np.argsort(-scores, axis=1)[:, :10] + 1
    _, found = index.search(vectors[queries], 11)
    return float(np.mean([len((set(hits.tolist()) - {int(query) + 1}) & set(truth.tolist())) / 10
                          for hits, truth, query in zip(found, exact, queries)]))


def test_the_recall_curve_is_what_ivf_searches_of_the_same_queries_find(tmp_path: Path) -> None:
    vectors = noisy_clusters(3000, seed=5)
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIMENSIONS), DIMENSIONS, 50, faiss.METRIC_INNER_PRODUCT)
    index.train(vectors)
    index.add_with_ids(vectors, np.arange(1, 3001))
    curve = measure_recall(index, np.random.default_rng(0), queries=200)
    assert curve.queries == 200 and len(set(curve.query_ids.tolist())) == 200
    for nprobe in (1, 2, 5, 12, 50):
        assert curve.recall(nprobe) == pytest.approx(true_recall(index, vectors, nprobe, curve.query_ids - 1), abs=1e-6)
    assert curve.recall(1) < 0.95 <= curve.recall(50)


def test_the_build_probes_the_fewest_lists_that_reach_the_target_recall(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    settings = settings_for(tmp_path, SEARCH_APPROXIMATE_ABOVE="1000")
    vectors = noisy_clusters(4000, seed=3)
    insert(settings, vectors, "row")
    with caplog.at_level(logging.INFO, logger="workers.writer.model_index"), running_indexer(settings):
        manifest = wait_for_manifest(settings, lambda m: m.count == 4000)
    assert manifest.kind == APPROXIMATE and manifest.target_recall == 0.95 and manifest.tuned_on == 4000
    assert 1 < manifest.nprobe < manifest.lists and manifest.recall >= 0.95
    assert f"with nprobe {manifest.nprobe} of {manifest.lists} lists" in caplog.text
    index = open_saved(settings, manifest)
    every_row = np.arange(4000)
    # Over every stored row, not the writer's sample: the choice holds for other queries (a margin of 0.01
    # for the sample's luck), and half as many lists would not have been enough on this data.
    assert true_recall(index, vectors, manifest.nprobe, every_row) >= 0.94
    assert true_recall(index, vectors, manifest.nprobe // 2, every_row) < 0.95


def test_a_higher_target_recall_probes_more_lists(tmp_path: Path) -> None:
    vectors = noisy_clusters(4000, seed=3)
    chosen = {}
    for target in ("0.8", "0.99"):
        settings = settings_for(tmp_path / target, SEARCH_APPROXIMATE_ABOVE="1000", SEARCH_TARGET_RECALL=target)
        insert(settings, vectors, "row")
        with running_indexer(settings):
            chosen[target] = wait_for_manifest(settings, lambda m: m.count == 4000)
    assert chosen["0.8"].nprobe < chosen["0.99"].nprobe
    assert chosen["0.8"].recall >= 0.8 and chosen["0.99"].recall >= 0.99


def test_nprobe_is_measured_again_when_the_index_has_doubled(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, SEARCH_APPROXIMATE_ABOVE="1000")
    insert(settings, noisy_clusters(3000, seed=3), "first")
    with running_indexer(settings) as indexer:
        first = wait_for_manifest(settings, lambda m: m.count == 3000)
        insert(settings, noisy_clusters(2000, seed=4), "more")  # 5000 < 2 × 3000: no new measurement
        indexer.rows_committed([MODEL])
        grown = wait_for_manifest(settings, lambda m: m.count == 5000)
        insert(settings, noisy_clusters(1000, seed=6), "doubled")
        indexer.rows_committed([MODEL])
        doubled = wait_for_manifest(settings, lambda m: m.count == 6000)
    assert first.tuned_on == grown.tuned_on == 3000 and doubled.tuned_on == 6000
    assert doubled.lists == first.lists  # measured again, not retrained (that waits for 4×)


def test_rows_committed_between_saves_are_read_once_when_the_save_is_due(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, SEARCH_INDEX_SAVE_INTERVAL_MS="3000")
    insert(settings, clustered_vectors(10, seed=1), "first")
    catch_ups: list[float] = []

    class CountingIndexer(Indexer):
        def _catch_up(self, *args: object) -> None:
            catch_ups.append(time.monotonic())
            super()._catch_up(*args)  # type: ignore[arg-type]

    indexer = CountingIndexer(settings)
    indexer.start()
    try:
        first = wait_for_manifest(settings, lambda m: m.count == 10)
        before = len(catch_ups)
        for number in range(8):  # a commit every quarter second, each notified, all within one save interval
            insert(settings, clustered_vectors(1, seed=10 + number), f"later {number}")
            indexer.rows_committed([MODEL])
            time.sleep(0.25)
        second = wait_for_manifest(settings, lambda m: m.count == 18, timeout=10.0)
    finally:
        indexer.stop(timeout=10)
    assert second.generation == first.generation + 1
    assert len(catch_ups) - before == 1
