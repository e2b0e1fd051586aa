"""The set of text hashes the store may hold (gateway/stored_hashes.py), read from a list standing in for it."""

from __future__ import annotations

import asyncio
import hashlib

import numpy as np
import pytest

from gateway import stored_hashes
from gateway.errors import Unavailable
from gateway.store_polls import BACKSTOP_POLLS, Marks, no_marks
from gateway.stored_hashes import StoredHashes
from shared.protocol import EmbeddingRow, Stored, StoreMarks


def digest(text: str) -> str:
    return hashlib.sha3_256(text.encode()).hexdigest()


class Store:
    """Rows (id, model, hash) in id order, read as ReadOnlyDatabase.hashes_after reads them."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, str, str]] = []
        self.down = False
        self.reads = 0

    def insert(self, model: str, text: str) -> None:
        self.rows.append((len(self.rows) + 1, model, digest(text)))

    def marks(self) -> StoreMarks:
        """The writer's marks for this store (no deletions)."""
        return StoreMarks(rows=len(self.rows), deletions=0)

    async def hashes_after(self, after: int, limit: int) -> list[tuple[int, str, str]]:
        self.reads += 1
        if self.down:
            raise Unavailable("the database did not answer")
        return [row for row in self.rows if row[0] > after][:limit]


def row(text: str, model: str = "m") -> EmbeddingRow:
    return EmbeddingRow(text=text, text_hash=digest(text), model_name=model, embedding=b"", dimensions=0)


async def known_within_a_second(hashes: StoredHashes, text: str) -> bool:
    for _ in range(100):
        if hashes.maybe_stored("m", [digest(text)]):
            return True
        await asyncio.sleep(0.01)
    return False


async def started(store: Store, marks: Marks = no_marks, backstop_polls: int = BACKSTOP_POLLS) -> StoredHashes:
    hashes = StoredHashes(store.hashes_after, poll_seconds=0.01, marks=marks, backstop_polls=backstop_polls)
    await hashes.start()
    for _ in range(200):
        if hashes.caught_up:
            return hashes
        await asyncio.sleep(0.01)
    raise AssertionError("never caught up")


def test_until_the_store_was_read_every_hash_may_be_stored() -> None:
    hashes = StoredHashes(Store().hashes_after, poll_seconds=1)
    assert hashes.maybe_stored("m", [digest("new")]) == [digest("new")]


def test_a_hash_never_stored_is_left_out_and_a_stored_one_kept() -> None:
    async def run() -> None:
        store = Store()
        store.insert("m", "stored")
        hashes = await started(store)
        assert hashes.maybe_stored("m", [digest("stored"), digest("never")]) == [digest("stored")]
        await hashes.stop()
    asyncio.run(run())


def test_a_hash_stored_for_one_model_is_not_stored_for_another() -> None:
    async def run() -> None:
        store = Store()
        store.insert("m", "text")
        hashes = await started(store)
        assert hashes.maybe_stored("other", [digest("text")]) == []
        await hashes.stop()
    asyncio.run(run())


def test_a_computed_hash_may_be_stored_at_once() -> None:
    async def run() -> None:
        hashes = await started(Store())
        hashes.rows_computed("m", ["just computed"], [digest("just computed")], np.zeros((1, 4), dtype=np.float32))
        assert hashes.maybe_stored("m", [digest("just computed")]) == [digest("just computed")]
        await hashes.stop()
    asyncio.run(run())


def test_rows_another_gateway_stored_are_learnt_by_polling() -> None:
    async def run() -> None:
        store = Store()
        hashes = await started(store)
        store.insert("m", "from elsewhere")
        await asyncio.sleep(0.1)
        assert hashes.maybe_stored("m", [digest("from elsewhere")]) == [digest("from elsewhere")]
        await hashes.stop()
    asyncio.run(run())


def test_a_store_larger_than_a_page_is_read_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stored_hashes, "PAGE", 7)

    async def run() -> None:
        store = Store()
        for i in range(50):
            store.insert("m", f"text {i}")
        hashes = await started(store)
        wanted = [digest(f"text {i}") for i in range(50)]
        assert hashes.maybe_stored("m", wanted) == wanted and hashes.rows_read == 50
        await hashes.stop()
    asyncio.run(run())


def test_while_the_store_is_down_every_hash_may_be_stored_until_it_is_read() -> None:
    async def run() -> None:
        store = Store()
        store.down = True
        hashes = StoredHashes(store.hashes_after, poll_seconds=0.01)
        await hashes.start()
        await asyncio.sleep(0.05)
        assert store.reads > 1 and hashes.maybe_stored("m", [digest("x")]) == [digest("x")]
        store.down = False
        await asyncio.sleep(0.05)
        assert hashes.caught_up and hashes.maybe_stored("m", [digest("x")]) == []
        await hashes.stop()
    asyncio.run(run())


def test_hashes_added_one_by_one_past_a_rebuild_all_stay_known(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stored_hashes, "_MERGE_AT", 8)

    async def run() -> None:
        store = Store()
        for i in range(20):
            store.insert("m", f"bulk {i}")
        hashes = await started(store)
        added = [digest(f"one {i}") for i in range(30)]  # several rebuilds of the sorted array
        hashes.add("m", added)
        everything = [digest(f"bulk {i}") for i in range(20)] + added
        assert hashes.maybe_stored("m", everything) == everything
        assert hashes.maybe_stored("m", [digest("absent")]) == []
        await hashes.stop()
    asyncio.run(run())


def test_hashes_a_commit_reports_may_be_stored_at_once() -> None:
    async def run() -> None:
        hashes = await started(Store())
        rows = [row(t, m) for t, m in [("one", "m"), ("two", "m"), ("three", "n")]]
        hashes.rows_stored(Stored.of(rows))
        assert hashes.maybe_stored("m", [digest("one"), digest("two"), digest("three")]) == [digest("one"), digest("two")]
        assert hashes.maybe_stored("n", [digest("three")]) == [digest("three")]
        await hashes.stop()
    asyncio.run(run())


def test_while_the_writers_marks_show_nothing_new_the_store_is_read_only_as_a_backstop() -> None:
    async def run() -> None:
        store = Store()
        store.insert("m", "already there")
        hashes = await started(store, marks=store.marks, backstop_polls=5)
        reads_before = store.reads
        await asyncio.sleep(0.2)  # 20 poll intervals
        reads = store.reads - reads_before
        await hashes.stop()
        assert 2 <= reads <= 8  # one in every 5 intervals (timers are not exact), not one in every interval
    asyncio.run(run())


def test_without_the_writers_marks_the_store_is_read_every_interval() -> None:
    async def run() -> None:
        store = Store()
        hashes = await started(store, backstop_polls=1000)
        reads_before = store.reads
        await asyncio.sleep(0.2)  # 20 poll intervals
        reads = store.reads - reads_before
        await hashes.stop()
        assert reads >= 10
    asyncio.run(run())


def test_an_unbroken_run_of_commit_reports_keeps_the_set_current_without_reading_the_store() -> None:
    async def run() -> None:
        store = Store()
        hashes = await started(store, marks=store.marks, backstop_polls=1000)
        reads_before = store.reads
        for n in range(10):  # each commit follows on from the one before
            after = len(store.rows)
            store.insert("m", f"text {n}")
            hashes.rows_stored(Stored.of([row(f"text {n}")], store.marks(), rows_after=after))
            await asyncio.sleep(0.02)
        assert store.reads == reads_before
        assert len(hashes.maybe_stored("m", [digest(f"text {n}") for n in range(10)])) == 10
        await hashes.stop()
    asyncio.run(run())


def test_a_row_whose_report_was_lost_is_read_once_the_marks_show_it() -> None:
    async def run() -> None:
        store = Store()
        hashes = await started(store, marks=store.marks, backstop_polls=1000)
        store.insert("m", "reported nowhere")  # committed; its STORED never came
        assert await known_within_a_second(hashes, "reported nowhere")
        await hashes.stop()
    asyncio.run(run())


def test_a_report_that_does_not_follow_on_from_the_rows_known_does_not_stand_in_for_a_read() -> None:
    async def run() -> None:
        store = Store()
        hashes = await started(store, marks=store.marks, backstop_polls=1000)
        store.insert("m", "reported nowhere")
        store.insert("m", "reported")  # its report says it follows row 1, which this gateway never heard of
        hashes.rows_stored(Stored.of([row("reported")], StoreMarks(rows=2, deletions=0), rows_after=1))
        assert await known_within_a_second(hashes, "reported nowhere")
        await hashes.stop()
    asyncio.run(run())
