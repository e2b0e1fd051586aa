"""Which text hashes the store may hold, so that a text nobody embedded before skips the database lookup.

Why: under uncached load almost every lookup misses, and the miss is not free. On PostgreSQL it was the largest
cost the server had (0.40 ms of its CPU per text, more than the writer's inserts; issue 14), taken from the
cores the workers need. A hash this set has never seen is not in the store, so its text goes straight to a
worker; any other hash is looked up as before.

The set is fed four ways: every row of the store at start, read in pages by id (until it has caught up,
every hash is a "maybe"); every vector this gateway computes, at once, before the writer has committed it;
the hashes of every commit, which the writer sends each gateway it has heard from (STORED), so a text another
gateway computed is looked up from its commit on, as it was before this set existed; and, in case such a
message was lost (a gateway reconnecting, a writer on another host), the store's rows read by id above the
last one seen (the one writer commits in id order, so a row never appears behind one already read). That read
is tried every SEARCH_INDEX_POLL_MS and done when the writer's marks show rows past the last one known (a
STORED names the rows mark it follows on from, so an unbroken run of them keeps the set up to date without
reading the store), or as a backstop (store_polls.py). A text whose hash is left out is computed again, and
its insert ignored. A deleted row stays in the set, which only costs its next request a lookup that misses.

Kept as the hashes' first 64 bits (a sorted array, plus a set of the ones added since it was last rebuilt):
8 bytes a row, and two texts whose hashes share 64 bits (odds about n² / 2^65) cost one lookup, never a
wrong vector, since the lookup compares the whole hash.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import numpy as np

from gateway.errors import Unavailable
from gateway.store_polls import BACKSTOP_POLLS, Marks, PollSchedule, no_marks
from shared.protocol import Stored, StoreMarks, hash_prefixes

log = logging.getLogger(__name__)

PAGE = 50_000
_FEW = 64  # up to this many (a request's) go in as ints: 5.6 µs for one hash against 11.5 through the arrays
# Hashes added since the array was built are merged into it once there are this many, or an eighth of it.
_MERGE_AT = 16_384

HashesAfter = Callable[[int, int], Awaitable[list[tuple[int, str, str]]]]  # (after id, limit) -> (id, model, hash)


def prefix(text_hash: str) -> int:
    """The first 64 bits of a hex SHA3-256 digest."""
    return int(text_hash[:16], 16)


@dataclass
class _ModelHashes:
    merged: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))  # sorted
    recent: set[int] = field(default_factory=set)

    def __contains__(self, key: int) -> bool:
        if key in self.recent:
            return True
        at = int(np.searchsorted(self.merged, np.uint64(key)))
        return at < len(self.merged) and int(self.merged[at]) == key

    def add(self, keys: np.ndarray) -> None:
        """Add uint64 keys: a large page goes into the array at once, a few into the set until it is merged."""
        threshold = max(_MERGE_AT, len(self.merged) // 8)
        if len(keys) >= threshold:
            self.merged = np.union1d(self.merged, keys)
            return
        self.add_few(keys.tolist())

    def add_few(self, keys: list[int]) -> None:
        """Add a few keys to the set, merging it into the array once it has grown by an eighth of it."""
        self.recent.update(keys)
        if len(self.recent) >= max(_MERGE_AT, len(self.merged) // 8):
            # Amortised: the array is rebuilt after it has grown by an eighth, so each row is sorted ~9 times.
            added = np.fromiter(self.recent, dtype=np.uint64, count=len(self.recent))
            self.merged = np.union1d(self.merged, added)
            self.recent = set()


class StoredHashes:
    """`maybe_stored(model, hashes)` on the event loop; `start()` begins reading the store, `stop()` ends it."""

    def __init__(self, hashes_after: HashesAfter, poll_seconds: float, marks: Marks = no_marks,
                 backstop_polls: int = BACKSTOP_POLLS) -> None:
        self._hashes_after = hashes_after
        self._poll_seconds = poll_seconds
        self._marks = marks
        self._schedule = PollSchedule(backstop_polls)
        self._models: dict[str, _ModelHashes] = {}
        self._last_id = 0  # every row up to this id is in the set
        self.caught_up = False  # every row committed before the first full read is in the set
        self.rows_read = 0
        self._task: asyncio.Task[None] | None = None

    def maybe_stored(self, model: str, hashes: list[str]) -> list[str]:
        """Those of `hashes` the store may hold for `model` (all of them until the set has caught up)."""
        if not self.caught_up:
            return hashes
        known = self._models.get(model)
        if known is None:
            return []
        return [h for h in hashes if prefix(h) in known]

    def add(self, model: str, hashes: list[str]) -> None:
        """Remember hex hashes of `model` that are stored, or about to be."""
        if len(hashes) <= _FEW:  # a request's own: as ints, without the arrays a page goes through
            self._models.setdefault(model, _ModelHashes()).add_few([prefix(h) for h in hashes])
        else:
            self._add_prefixes(model, hash_prefixes(hashes))

    def rows_stored(self, message: Stored) -> None:
        """As a listener of the writer link: the hashes of a commit, maybe another gateway's."""
        for model, prefixes in zip(message.models, message.prefixes):
            self._add_prefixes(model, prefixes)
        if message.marks is not None and message.rows_after is not None and message.rows_after <= self._last_id:
            self._last_id = max(self._last_id, message.marks.rows)  # the commit follows on from what is known

    def _add_prefixes(self, model: str, prefixes: bytes) -> None:
        # At array speed: a start with a million rows must not hold the event loop up.
        keys = np.frombuffer(prefixes, dtype=">u8").astype(np.uint64)
        self._models.setdefault(model, _ModelHashes()).add(keys)

    def _add_page(self, rows: list[tuple[int, str, str]]) -> None:
        """A page of the store's rows."""
        by_model: dict[str, list[str]] = {}
        for _, model, text_hash in rows:
            by_model.setdefault(model, []).append(text_hash)
        for model, hashes in by_model.items():
            self.add(model, hashes)

    def rows_computed(self, model: str, texts: list[str], hashes: list[str], vectors: np.ndarray) -> None:
        """As a ComputedListener of the embedding service: what this gateway computed goes to the writer."""
        self.add(model, hashes)

    async def start(self) -> None:
        """Read the store's rows from the first, then poll for new ones."""
        self._task = asyncio.create_task(self._poll(), name="stored-hashes")

    async def stop(self) -> None:
        """Stop reading the store."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _poll(self) -> None:
        while True:
            marks = self._marks()
            if self._schedule.due(not self.caught_up or marks is None or marks.rows > self._last_id):
                try:
                    await self._read(marks)
                except Unavailable as exc:  # the database is restarting: every hash stays a maybe meanwhile
                    log.debug("could not read the stored hashes: %s", exc.detail)
                except Exception:
                    log.exception("could not read the stored hashes; retrying")
            await asyncio.sleep(self._poll_seconds)

    async def _read(self, marks: StoreMarks | None) -> None:
        """Read the rows after the last one known. `marks` were told after their commit, before this read: every
        row up to them is there for it to see."""
        while True:
            rows = await self._hashes_after(self._last_id, PAGE)
            if rows:
                self._add_page(rows)
                self._last_id = max(self._last_id, rows[-1][0])
                self.rows_read += len(rows)
            if len(rows) < PAGE:
                if marks is not None:
                    self._last_id = max(self._last_id, marks.rows)  # past the newest rows, if they were deleted
                if not self.caught_up:
                    log.info("stored hashes read: %d rows", self.rows_read)
                self.caught_up = True
                return
