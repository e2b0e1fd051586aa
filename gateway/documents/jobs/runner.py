"""This gateway process's document jobs: accepted at once, run one at a time in the background, resumed after a
restart, deleted DOCUMENT_JOB_RETENTION_HOURS after they finish.

A job goes through the same DocumentService as the synchronous endpoint (text extraction in a thread, chunks
through EmbeddingService, one DOCUMENT_WRITE to the writer), so its document and sentence rows are stored as that
endpoint stores them, and its zip is the one that endpoint would answer with.

Each job belongs to the gateway process that accepted it (its index, recorded in the job). With several
gateway processes on one DATA_DIR, each resumes only its own unfinished jobs when it starts, and a killed one
is replaced in the same slot, so exactly one process resumes a job; process 0 also adopts the jobs of indexes
that no longer exist (GATEWAY_PROCESSES lowered). Any process answers for any job: it reads the job's file.
A resumed job starts over: the vectors of its first run travelled with the document, which was not yet sent,
so they were lost with the process (those already in the store or another gateway's cache are not recomputed).
One job runs at a time per process: a job is there to queue work, and two documents at once would only share
the workers between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import IO, BinaryIO

from gateway.documents.jobs.progress import JobProgress
from gateway.documents.jobs.record import DocumentJob, new_job_id
from gateway.documents.jobs.store import JobStore
from gateway.documents.packaging import safe_stem, write_zip
from gateway.documents.parameters import DocumentParameters
from gateway.documents.service import DocumentService, EmbeddedDocument
from gateway.documents.upload import Upload
from gateway.errors import GatewayError, GatewayTimeout, Overloaded, Unavailable
from shared.settings import Settings

log = logging.getLogger(__name__)
SWEEP_SECONDS = 60.0
EMBED_ATTEMPTS = 3  # a model without a live worker for a while (a restart, a resumed job at start-up) is retried
_TRANSIENT = (Overloaded, Unavailable, GatewayTimeout)
_LEFTOVER_SECONDS = 600.0  # a staging folder older than this is no job being created


class DocumentJobs:
    """The jobs of gateway process `index`: `submit` accepts one, `job` and `result` read any process's."""

    def __init__(self, settings: Settings, documents: DocumentService, index: int) -> None:
        self._settings = settings
        self._documents = documents
        self._index = index
        self._store = JobStore(settings.jobs_dir)
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Queue this process's unfinished jobs again (oldest first), then run jobs and delete old ones."""
        for job in await asyncio.to_thread(self._requeue_unfinished):
            self._queue.put_nowait(job.job_id)
        self._tasks = [asyncio.create_task(self._run_queued()), asyncio.create_task(self._sweep_periodically())]

    async def stop(self) -> None:
        """Stop the running job where it is: its state stays unfinished, so the next start resumes it."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def submit(self, upload: Upload, parameters: DocumentParameters, client_ip: str | None) -> DocumentJob:
        """Store a new job for `upload` and queue it; the returned job is `queued`."""
        now = time.time()
        job = DocumentJob(job_id=new_job_id(), gateway=self._index, filename=upload.filename, parameters=parameters,
                          client_ip=client_ip, created_at=now, updated_at=now)
        await asyncio.to_thread(self._store.create, job, upload.content)
        self._queue.put_nowait(job.job_id)
        log.info("document job %s: queued (%d bytes, %s)", job.job_id, len(upload.content), parameters.model_name)
        return job

    async def job(self, job_id: str) -> DocumentJob | None:
        """The stored state of any process's job; None when there is no such job."""
        return await asyncio.to_thread(self._store.load, job_id)

    async def result(self, job_id: str) -> tuple[BinaryIO, int] | None:
        """The finished job's zip, open, and its size; None when it has none."""
        return await asyncio.to_thread(self._store.open_result, job_id)

    def _mine(self, job: DocumentJob) -> bool:
        return job.gateway == self._index or (self._index == 0 and job.gateway >= self._settings.gateway_processes)

    def _requeue_unfinished(self) -> list[DocumentJob]:
        requeued = []
        for job in sorted(self._store.jobs(), key=lambda job: job.created_at):
            if job.finished or not self._mine(job):
                continue
            job = job.changed(state="queued", gateway=self._index, sentences_done=0, sentences_total=None,
                              embedding_since=None, progress_at=None)
            self._store.save(job)
            requeued.append(job)
            log.info("document job %s: resumed after a restart (run %d so far)", job.job_id, job.runs)
        return requeued

    async def _run_queued(self) -> None:
        while True:
            job_id = await self._queue.get()
            try:
                job = await self.job(job_id)
                if job is not None and not job.finished:
                    await self._run(job)
            except Exception:  # the disk failed under this job (or it was deleted meanwhile): on to the next one
                log.exception("document job %s: could not be run", job_id)

    async def _run(self, job: DocumentJob) -> None:
        job = job.changed(state="extracting", runs=job.runs + 1, error=None, error_status=None)
        await asyncio.to_thread(self._store.save, job)
        started = time.monotonic()
        progress = JobProgress(self._store, job)
        try:
            async with progress:
                document = await self._embed(progress)
            await asyncio.to_thread(self._store.write_result, job.job_id,
                                    lambda target: self._write_zip(target, progress.job, document))
            finished = progress.job.changed(state="done", sentences_done=progress.job.sentences_total)
            log.info("document job %s: done in %.1fs", job.job_id, time.monotonic() - started)
        except GatewayError as exc:
            finished = progress.job.changed(state="failed", error=exc.detail, error_status=exc.status_code)
            log.info("document job %s: failed (%d): %s", job.job_id, exc.status_code, exc.detail)
        except Exception:  # any other failure ends this job, not the queue
            log.exception("document job %s: failed unexpectedly", job.job_id)
            finished = progress.job.changed(state="failed", error="internal error; see the gateway log", error_status=500)
        await asyncio.to_thread(self._store.save, finished)

    async def _embed(self, progress: JobProgress) -> EmbeddedDocument:
        job = progress.job
        content = await asyncio.to_thread(self._store.upload, job.job_id)
        for attempt in range(1, EMBED_ATTEMPTS + 1):
            try:
                return await self._documents.embed(Upload(job.filename, content), job.parameters.model_name,
                                                   job.client_ip, progress.report, job.parameters.collection)
            except _TRANSIENT as exc:
                if attempt == EMBED_ATTEMPTS:
                    raise
                delay = (exc.retry_after or 1) * attempt
                log.warning("document job %s: %s; trying again in %ds", job.job_id, exc.detail, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    @staticmethod
    def _write_zip(target: IO[bytes], job: DocumentJob, document: EmbeddedDocument) -> None:
        orient = job.parameters.json_format
        write_zip(target, safe_stem(job.filename), document.sentences, document.vectors, orient,
                  document.archive_metadata(orient))

    async def _sweep_periodically(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self._sweep)
            await asyncio.sleep(SWEEP_SECONDS)

    def _sweep(self) -> None:
        """Delete this process's jobs that finished more than DOCUMENT_JOB_RETENTION_HOURS ago."""
        cutoff = time.time() - self._settings.document_job_retention_hours * 3600
        for job in self._store.jobs():
            if job.finished and job.updated_at < cutoff and self._mine(job):
                self._store.delete(job.job_id)
                log.info("document job %s: deleted (finished over DOCUMENT_JOB_RETENTION_HOURS ago)", job.job_id)
        if self._index == 0:
            self._store.remove_leftovers(_LEFTOVER_SECONDS)
