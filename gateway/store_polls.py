"""When a gateway reads the store for rows and deletions it may not have heard of (stored_hashes.py,
deletion_feed.py): when the writer's marks say there is more than it has read, or the marks are unknown, and
otherwise only as a backstop.

Why: idle, the two polls (four reads a second each, by default) were most of an idle gateway's Python time
(py-spy), and with SmolLM2 serving a few requests a second that idle cost was most of the gateway's CPU per
request. The writer is the store's one writer and tells its marks in every PONG and STORED, so a poll that
would find nothing can be skipped. The backstop catches what the marks cannot show: rows written to the
database past the writer (an operator's SQL, a second writer by mistake).
"""

from __future__ import annotations

from typing import Callable

from shared.protocol import StoreMarks

BACKSTOP_POLLS = 20  # a read at least every this many poll intervals (5 s at SEARCH_INDEX_POLL_MS=250)

Marks = Callable[[], StoreMarks | None]  # the writer's latest marks, None while they are unknown or stale


def no_marks() -> StoreMarks | None:
    """Marks for a reader without a writer link: unknown, so every interval reads."""
    return None


class PollSchedule:
    """Says at each poll interval whether to read the store."""

    def __init__(self, backstop_polls: int = BACKSTOP_POLLS) -> None:
        self._backstop_polls = backstop_polls
        self._skipped = 0

    def due(self, behind: bool) -> bool:
        """Read now: when `behind` (the marks are ahead of what was read, or unknown), or as the backstop."""
        if behind or self._skipped >= self._backstop_polls - 1:
            self._skipped = 0
            return True
        self._skipped += 1
        return False
