"""A running job's progress: kept in memory as DocumentService reports it, saved to its state file by one task.

DocumentService reports after every chunk, from the event loop; writing the state file there would put a disk
flush (fsync) on every other client's path. So the report only replaces the in-memory state, and one task saves
the latest state in a thread at most every SAVE_SECONDS: one save at a time, so no two writes of the same file
race, and clients polling GET see progress that is at most that old.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import TracebackType

from gateway.documents.jobs.record import DocumentJob
from gateway.documents.jobs.store import JobStore

SAVE_SECONDS = 0.5


class JobProgress:
    """`async with JobProgress(store, job) as progress:` saves `progress.job` while the block runs, and once more
    as it ends; `progress.report` is the DocumentService progress callback."""

    def __init__(self, store: JobStore, job: DocumentJob) -> None:
        self.job = job
        self._store = store
        self._saved: DocumentJob | None = None
        self._stopping = asyncio.Event()
        self._saver: asyncio.Task[None] | None = None

    def report(self, done: int, total: int) -> None:
        """DocumentService's progress: `done` of `total` distinct sentences embedded (0 when embedding begins)."""
        now = time.time()
        if done == 0:
            self.job = self.job.changed(state="embedding", sentences_done=0, sentences_total=total,
                                        embedding_since=now, progress_at=now)
        else:
            self.job = self.job.changed(sentences_done=done, sentences_total=total, progress_at=now)

    async def __aenter__(self) -> JobProgress:
        self._saver = asyncio.create_task(self._save_periodically())
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        self._stopping.set()
        if self._saver is not None:
            await asyncio.shield(self._saver)  # a save under way finishes before the caller writes the file again

    async def _save_periodically(self) -> None:
        while True:
            stopping = self._stopping.is_set()
            job = self.job
            if job is not self._saved:
                await asyncio.to_thread(self._store.save, job)
                self._saved = job
            if stopping:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), SAVE_SECONDS)
