"""Document jobs on disk: DATA_DIR/jobs/<id>/ holds `upload` (the file), `job.json` (its state) and, when done,
`result.zip`.

Files rather than the database: the gateway never writes to the database (the writer does), and every gateway
process can read any job's state, whichever of them runs it. Every file is put in place atomically (fsync, then
rename): a job is created whole in a staging folder renamed to its id, and `job.json` is replaced, never
rewritten in place, so a reader, or a gateway starting after a crash, finds one complete state or the next.
The methods block on the disk: callers on the event loop run them in a thread.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import IO, BinaryIO, Callable, Iterator

from pydantic import ValidationError

from gateway.documents.jobs.record import DocumentJob, is_job_id
from shared.file_integrity import atomic_replace, atomic_write_bytes, atomic_write_text, fsync_path

log = logging.getLogger(__name__)
STATE_FILE = "job.json"
UPLOAD_FILE = "upload"
RESULT_FILE = "result.zip"
_STAGING_PREFIX = "."  # staging and deleting folders: never read as jobs


class JobStore:
    """The job folders under one directory."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def create(self, job: DocumentJob, content: bytes) -> None:
        """Store a new job and its upload: both appear at once, or neither (after a crash)."""
        self._directory.mkdir(parents=True, exist_ok=True)
        staging = self._directory / f"{_STAGING_PREFIX}{job.job_id}.new"
        staging.mkdir()
        try:
            atomic_write_bytes(staging / UPLOAD_FILE, content)
            atomic_write_text(staging / STATE_FILE, job.model_dump_json(indent=1))
            os.rename(staging, self._folder(job.job_id))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fsync_path(self._directory)

    def save(self, job: DocumentJob) -> None:
        """Replace the job's state file by `job`."""
        atomic_write_text(self._folder(job.job_id) / STATE_FILE, job.model_dump_json(indent=1))

    def load(self, job_id: str) -> DocumentJob | None:
        """The job's state, None when no such job is stored (or it is being deleted)."""
        try:
            text = (self._folder(job_id) / STATE_FILE).read_text("utf-8")
        except (FileNotFoundError, NotADirectoryError):
            return None
        return DocumentJob.model_validate_json(text)

    def upload(self, job_id: str) -> bytes:
        """The file the job was given."""
        return (self._folder(job_id) / UPLOAD_FILE).read_bytes()

    def write_result(self, job_id: str, write: Callable[[IO[bytes]], None]) -> None:
        """Put the job's zip in place, as `write(file)` writes it."""
        def written(staging: Path) -> None:
            with staging.open("wb") as handle:
                write(handle)

        atomic_replace(self._folder(job_id) / RESULT_FILE, written)

    def open_result(self, job_id: str) -> tuple[BinaryIO, int] | None:
        """The job's zip, open (it stays readable if the job is deleted meanwhile), and its size; None if absent."""
        try:
            handle = (self._folder(job_id) / RESULT_FILE).open("rb")
        except (FileNotFoundError, NotADirectoryError):
            return None
        return handle, os.fstat(handle.fileno()).st_size

    def jobs(self) -> Iterator[DocumentJob]:
        """Every stored job; a state file that cannot be read is logged and skipped."""
        if not self._directory.is_dir():
            return
        for folder in sorted(self._directory.iterdir()):
            if not is_job_id(folder.name):
                continue
            try:
                job = self.load(folder.name)
            except (OSError, ValueError, ValidationError) as exc:
                log.error("document job %s: unreadable %s, skipped: %s", folder.name, STATE_FILE, exc)
                continue
            if job is not None:
                yield job

    def delete(self, job_id: str) -> None:
        """Remove the job: renamed out of sight first, so nobody sees half of it."""
        doomed = self._directory / f"{_STAGING_PREFIX}{job_id}.deleting"
        try:
            os.rename(self._folder(job_id), doomed)
        except FileNotFoundError:
            return
        shutil.rmtree(doomed, ignore_errors=True)

    def remove_leftovers(self, older_than_seconds: float) -> None:
        """Remove staging and deleting folders that a crash left behind, once older than `older_than_seconds`."""
        if not self._directory.is_dir():
            return
        cutoff = time.time() - older_than_seconds
        for folder in self._directory.iterdir():
            try:
                stale = folder.name.startswith(_STAGING_PREFIX) and folder.stat().st_mtime < cutoff
            except FileNotFoundError:
                continue
            if stale:
                shutil.rmtree(folder, ignore_errors=True)

    def _folder(self, job_id: str) -> Path:
        if not is_job_id(job_id):  # callers check; this keeps any other string from ever naming a path
            raise ValueError(f"not a job id: {job_id!r}")
        return self._directory / job_id
