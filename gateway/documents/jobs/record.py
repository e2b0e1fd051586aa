"""A document job as its state file keeps it, and what its numbers mean (time left, finished or not)."""

from __future__ import annotations

import re
import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict

from gateway.documents.parameters import DocumentParameters

JobState = Literal["queued", "extracting", "embedding", "done", "failed"]
FINISHED: tuple[JobState, ...] = ("done", "failed")
_JOB_ID = re.compile(r"[0-9a-f]{32}")


def new_job_id() -> str:
    """A fresh job id: 32 lowercase hex digits (a UUID4), the only form `is_job_id` accepts."""
    return uuid.uuid4().hex


def is_job_id(text: str) -> bool:
    """Whether `text` has the form of a job id; nothing else ever names a folder under DATA_DIR/jobs."""
    return _JOB_ID.fullmatch(text) is not None


class DocumentJob(BaseModel):
    """One job: who runs it, what it was asked, how far it has come. Times are seconds since the epoch."""

    model_config = ConfigDict(frozen=True, extra="ignore")  # a newer version's extra fields do not break an older one
    job_id: str
    gateway: int  # the gateway process (index) that runs it, and resumes it after a restart in its slot
    filename: str  # as the client sent it: shown and used for the zip's stem, never a path
    parameters: DocumentParameters
    client_ip: str | None = None
    state: JobState = "queued"
    created_at: float
    updated_at: float
    runs: int = 0  # runs started: 1, and one more after each restart of its gateway mid-job
    sentences_done: int = 0  # distinct sentences embedded in this run
    sentences_total: int | None = None  # distinct sentences of the document; None until it is split
    embedding_since: float | None = None  # when this run began embedding
    progress_at: float | None = None  # when sentences_done was reached
    error: str | None = None
    error_status: int | None = None  # the HTTP status the synchronous endpoint would have answered

    @property
    def finished(self) -> bool:
        """Done or failed: nothing will change it any more."""
        return self.state in FINISHED

    def changed(self, **fields: object) -> DocumentJob:
        """A copy with `fields` changed and `updated_at` now."""
        return self.model_copy(update={**fields, "updated_at": time.time()})

    def expected_seconds_left(self, now: float) -> float | None:
        """Time left at the rate of this run so far; None until a chunk has been embedded (or when failed)."""
        if self.state == "done":
            return 0.0
        if (self.state != "embedding" or not self.sentences_done or self.sentences_total is None
                or self.embedding_since is None or self.progress_at is None or self.progress_at <= self.embedding_since):
            return None
        rate = self.sentences_done / (self.progress_at - self.embedding_since)
        return max(0.0, (self.sentences_total - self.sentences_done) / rate - (now - self.progress_at))
