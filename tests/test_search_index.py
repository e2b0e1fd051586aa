"""The gateway's search: the writer's saved index and the gateway's own recent rows, merged."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Awaitable, Callable

import faiss
import numpy as np
import pytest

from gateway.database import ReadOnlyDatabase
from gateway.errors import Unavailable
from gateway.search.indexes import SearchIndexes
from shared.index_manifest import UNTUNED_NPROBE, model_index_dir
from shared.protocol import EmbeddingRow, SearchState
from shared.schema import text_hash
from shared.settings import Settings, load_settings
from workers.writer.index_build import build_index
from workers.writer.index_source import EmbeddingSource
from workers.writer.model_index import IndexPolicy, ModelIndex
from workers.writer.store import EmbeddingStore, RetryPolicy

MODEL = "test-model"


def unit(*values: float) -> np.ndarray:
    vector = np.zeros(8, dtype=np.float32)
    vector[:len(values)] = values
    return vector / np.linalg.norm(vector)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = load_settings(config_file=tmp_path / "no-config.env",
                             overrides={"DATA_DIR": str(tmp_path), "SEARCH_INDEX_POLL_MS": "20",
                                        "SEARCH_TAIL_MAX_ROWS": "5"})
    EmbeddingStore(settings.database_url, RetryPolicy(3, 0.01, 0.1)).close()  # creates the tables
    return settings


def store_rows(settings: Settings, rows: dict[str, np.ndarray]) -> None:
    store = EmbeddingStore(settings.database_url, RetryPolicy(3, 0.01, 0.1))
    store.insert_embeddings([EmbeddingRow(text, text_hash(text), MODEL, vector.tobytes(), 8)
                             for text, vector in rows.items()])
    store.close()


def save_index(settings: Settings) -> None:
    """What the writer's indexer does: every stored row into a saved exact index."""
    directory = model_index_dir(settings.index_dir, MODEL)
    index = ModelIndex.load(MODEL, directory) or ModelIndex.exact(MODEL, directory, 8)
    source = EmbeddingSource(settings.database_url)
    for chunk in source.chunks_after(MODEL, index.rows_covered, 8):
        index.add(chunk)
    source.close()
    index.save()


def computed(search: SearchIndexes, rows: dict[str, np.ndarray]) -> None:
    search.rows_computed(MODEL, list(rows), [text_hash(text) for text in rows], np.stack(list(rows.values())))


def run(settings: Settings, body: Callable[[SearchIndexes], Awaitable[None]]) -> None:
    async def main() -> None:
        database = ReadOnlyDatabase(settings.database_url)
        search = SearchIndexes(settings, (MODEL,), database)
        await search.start()
        try:
            await body(search)
        finally:
            await search.stop()
            database.close()

    asyncio.run(main())


def state_of(search: SearchIndexes) -> SearchState:
    [state] = search.states()
    return state


async def texts_found(search: SearchIndexes, query: np.ndarray, k: int = 10, exclude: str = "") -> list[str]:
    return [hit.text for hit in await search.search(MODEL, query, k, exclude)]


def test_a_model_with_nothing_stored_returns_no_results(settings: Settings) -> None:
    async def body(search: SearchIndexes) -> None:
        assert await search.search(MODEL, unit(1), 10, "") == []

    run(settings, body)


def test_results_from_the_saved_index_and_the_tail_are_merged_best_first(settings: Settings) -> None:
    store_rows(settings, {"indexed close": unit(1, 0.2), "indexed far": unit(0, 1)})
    save_index(settings)

    async def body(search: SearchIndexes) -> None:
        computed(search, {"recent closest": unit(1, 0.1), "recent middle": unit(1, 1)})
        hits = await search.search(MODEL, unit(1), 10, "")
        assert [hit.text for hit in hits] == ["recent closest", "indexed close", "recent middle", "indexed far"]
        assert abs(hits[1].similarity - float(unit(1) @ unit(1, 0.2))) < 1e-6

    run(settings, body)


def test_the_query_text_is_left_out_of_its_own_results(settings: Settings) -> None:
    store_rows(settings, {"the query": unit(1), "another": unit(1, 0.5)})
    save_index(settings)

    async def body(search: SearchIndexes) -> None:
        assert await texts_found(search, unit(1), k=1, exclude="the query") == ["another"]

    run(settings, body)


def test_k_larger_than_the_corpus_returns_the_whole_corpus(settings: Settings) -> None:
    store_rows(settings, {f"row {n}": unit(1, n) for n in range(3)})
    save_index(settings)

    async def body(search: SearchIndexes) -> None:
        computed(search, {"recent": unit(0, 1)})
        assert len(await texts_found(search, unit(1), k=1000)) == 4

    run(settings, body)


def test_a_new_generation_replaces_the_tail_rows_it_covers(settings: Settings) -> None:
    async def body(search: SearchIndexes) -> None:
        rows = {"first": unit(1), "second": unit(0, 1)}
        computed(search, rows)
        store_rows(settings, rows)
        save_index(settings)
        for _ in range(100):
            await asyncio.sleep(0.02)
            if state_of(search).generation:
                break
        assert state_of(search) == SearchState(MODEL, generation=1, indexed=2, kind="exact", tail=0, complete=True)
        assert sorted(await texts_found(search, unit(1))) == ["first", "second"]

    run(settings, body)


def test_rows_stored_before_the_gateway_started_and_not_yet_indexed_are_found(settings: Settings) -> None:
    store_rows(settings, {"stored while no index existed": unit(1)})

    async def body(search: SearchIndexes) -> None:
        assert await texts_found(search, unit(1)) == ["stored while no index existed"]

    run(settings, body)


def test_more_unindexed_rows_than_the_tail_holds_answer_503_until_the_index_covers_them(settings: Settings) -> None:
    store_rows(settings, {f"row {n}": unit(1, n) for n in range(8)})  # the tail holds 5

    async def body(search: SearchIndexes) -> None:
        with pytest.raises(Unavailable, match="not ready yet"):
            await search.search(MODEL, unit(1), 3, "")
        save_index(settings)
        for _ in range(100):
            await asyncio.sleep(0.02)
            if state_of(search).complete:
                break
        assert len(await texts_found(search, unit(1), k=3)) == 3

    run(settings, body)


def approximate_index_saved(settings: Settings, count: int = 2000) -> int:
    """Store `count` rows, build and save the writer's approximate index of them; the nprobe it measured."""
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((count, 8)).astype(np.float32)
    store_rows(settings, {f"row {number}": vector / np.linalg.norm(vector) for number, vector in enumerate(vectors)})
    source = EmbeddingSource(settings.database_url)
    index = build_index(source, MODEL, model_index_dir(settings.index_dir, MODEL), IndexPolicy(approximate_above=100))
    source.close()
    assert index is not None and index.tuning.nprobe
    return index.save().nprobe


def probed_lists(search: SearchIndexes) -> int:
    generation = search._models[MODEL].generation
    assert generation is not None and isinstance(generation.index, faiss.IndexIVF)
    return int(generation.index.nprobe)


def test_the_gateway_probes_the_lists_the_writer_measured(settings: Settings) -> None:
    measured = approximate_index_saved(settings)
    assert measured != UNTUNED_NPROBE  # else the test could not tell the two apart

    async def body(search: SearchIndexes) -> None:
        await texts_found(search, unit(1))
        assert probed_lists(search) == measured

    run(settings, body)


def test_an_explicit_search_ivf_nprobe_overrides_the_measured_one(tmp_path: Path) -> None:
    settings = load_settings(config_file=tmp_path / "no-config.env",
                             overrides={"DATA_DIR": str(tmp_path), "SEARCH_INDEX_POLL_MS": "20", "SEARCH_IVF_NPROBE": "3"})
    measured = approximate_index_saved(settings)
    assert measured != 3

    async def body(search: SearchIndexes) -> None:
        await texts_found(search, unit(1))
        assert probed_lists(search) == 3

    run(settings, body)
