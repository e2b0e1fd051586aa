"""When a gateway reads the writer's deletions log (gateway/deletion_feed.py), read from a list standing in for it."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.deletion_feed import DeletionFeed
from gateway.store_polls import BACKSTOP_POLLS, Marks, no_marks
from shared.protocol import DeletedRow, Stored, StoreMarks


class Log:
    """Entries (entry id, row) in order, read as ReadOnlyDatabase reads the deletions log."""

    def __init__(self) -> None:
        self.entries: list[tuple[int, DeletedRow]] = []
        self.reads = 0

    def delete(self, row_id: int) -> None:
        self.entries.append((len(self.entries) + 1, DeletedRow(row_id, "m", f"hash {row_id}")))

    def marks(self) -> StoreMarks:
        return StoreMarks(rows=100, deletions=len(self.entries))

    async def last_deletion(self) -> int:
        return len(self.entries)

    async def deletions_after(self, after: int, limit: int) -> list[tuple[int, DeletedRow]]:
        self.reads += 1
        return [entry for entry in self.entries if entry[0] > after][:limit]


async def started(log: Log, poll_seconds: float = 0.01, marks: Marks = no_marks,
                  backstop_polls: int = BACKSTOP_POLLS) -> tuple[DeletionFeed, list[DeletedRow]]:
    database: Any = log  # duck-typed: the two reads DeletionFeed makes
    feed = DeletionFeed(database, poll_seconds, marks, backstop_polls)
    applied: list[DeletedRow] = []
    feed.listeners.append(applied.extend)
    await feed.start()
    await asyncio.sleep(0.05)  # the first poll takes the log's end
    return feed, applied


def test_a_writers_notice_of_new_deletions_is_read_at_once_though_polls_are_a_minute_apart() -> None:
    async def run() -> None:
        log = Log()
        feed, applied = await started(log, poll_seconds=60, marks=log.marks)
        log.delete(7)
        feed.stored(Stored(models=[], prefixes=[], marks=log.marks()))
        await asyncio.sleep(0.1)
        await feed.stop()
        assert applied == [DeletedRow(7, "m", "hash 7")]
    asyncio.run(run())


def test_rows_deleted_before_the_feed_started_are_not_applied() -> None:
    async def run() -> None:
        log = Log()
        log.delete(3)
        feed, applied = await started(log)
        await asyncio.sleep(0.05)
        await feed.stop()
        assert applied == []
    asyncio.run(run())


def test_while_the_writers_marks_show_nothing_new_the_log_is_read_only_as_a_backstop() -> None:
    async def run() -> None:
        log = Log()
        feed, _ = await started(log, marks=log.marks, backstop_polls=5)
        reads_before = log.reads
        await asyncio.sleep(0.2)  # 20 poll intervals
        reads = log.reads - reads_before
        await feed.stop()
        assert 2 <= reads <= 8  # one in every 5 intervals (timers are not exact), not one in every interval
    asyncio.run(run())


def test_without_the_writers_marks_the_log_is_read_every_interval() -> None:
    async def run() -> None:
        log = Log()
        feed, _ = await started(log, backstop_polls=1000)
        reads_before = log.reads
        await asyncio.sleep(0.2)
        reads = log.reads - reads_before
        await feed.stop()
        assert reads >= 10
    asyncio.run(run())


def test_a_deletion_whose_notice_was_lost_is_read_once_the_marks_show_it() -> None:
    async def run() -> None:
        log = Log()
        feed, applied = await started(log, marks=log.marks, backstop_polls=1000)
        log.delete(9)  # the marks (a PONG's) show it; no STORED came
        await asyncio.sleep(0.1)
        await feed.stop()
        assert applied == [DeletedRow(9, "m", "hash 9")]
    asyncio.run(run())
