"""Deleted rows leave this gateway's memory: its cache and search tails, whoever asked for the delete.

The gateway that forwarded a DELETE applies the writer's answer at once (`apply`); every gateway process, on
this host or another, also reads the writer's deletions log, so a row deleted through another gateway is gone
here as soon as the writer's notice comes (a STORED with the new marks), or within a SEARCH_INDEX_POLL_MS. The
log is read on such a notice, when the writer's marks show entries past the last one read or are unknown, and
as a backstop (store_polls.py). Reading a log (rather than trusting notices alone) misses nothing across a
writer or gateway restart: a gateway starts reading at the log's end, with empty caches.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from gateway.database import ReadOnlyDatabase
from gateway.errors import Unavailable
from gateway.store_polls import BACKSTOP_POLLS, Marks, PollSchedule, no_marks
from shared.protocol import DeletedRow, Stored, StoreMarks

log = logging.getLogger(__name__)

DeletionListener = Callable[[list[DeletedRow]], None]
_PAGE = 10_000


class DeletionFeed:
    """Tells its listeners of every row deleted from the store, from the moment it started."""

    def __init__(self, database: ReadOnlyDatabase, poll_seconds: float, marks: Marks = no_marks,
                 backstop_polls: int = BACKSTOP_POLLS) -> None:
        self._database = database
        self._poll_seconds = poll_seconds
        self._marks = marks
        self._schedule = PollSchedule(backstop_polls)
        self._last: int | None = None  # the last log entry applied; None until the log could be read
        self._task: asyncio.Task[None] | None = None
        self._notified = asyncio.Event()
        self.listeners: list[DeletionListener] = []

    async def start(self) -> None:
        """Start reading the log from its current end."""
        self._task = asyncio.create_task(self._poll(), name="deletion-feed")

    async def stop(self) -> None:
        """Stop reading the log."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def apply(self, rows: list[DeletedRow]) -> None:
        """Drop `rows` from every listener now (the log brings them again later; dropping twice is harmless)."""
        if rows:
            for listener in self.listeners:
                listener(rows)

    def stored(self, message: Stored) -> None:
        """As a listener of the writer link: a notice that names entries past the last one read wakes the poll."""
        if message.marks is not None and self._last is not None and message.marks.deletions > self._last:
            self._notified.set()

    async def _poll(self) -> None:
        while True:
            marks = self._marks()
            try:
                if self._schedule.due(self._last is None or marks is None or marks.deletions > self._last):
                    await self._read(marks)
            except Unavailable as exc:  # the database is restarting: read what was missed once it is back
                log.debug("could not read the deletions log: %s", exc.detail)
            except Exception:
                log.exception("could not read the deletions log; retrying")
            try:
                await asyncio.wait_for(self._notified.wait(), self._poll_seconds)
            except TimeoutError:
                pass
            self._notified.clear()

    async def _read(self, marks: StoreMarks | None) -> None:
        """Read the entries after the last one applied. `marks` were told after their delete, before this read:
        every entry up to them is there for it to see."""
        if self._last is None:
            self._last = await self._database.last_deletion()
            return
        while True:
            entries = await self._database.deletions_after(self._last, _PAGE)
            if entries:
                self._last = entries[-1][0]
                self.apply([row for _, row in entries])
            if len(entries) < _PAGE:
                if marks is not None:
                    self._last = max(self._last, marks.deletions)
                return
