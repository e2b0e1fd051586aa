"""What the job endpoints answer: a job's state as clients see it (the state file holds more)."""

from __future__ import annotations

import datetime

from pydantic import BaseModel, Field

from gateway.documents.jobs.record import DocumentJob, JobState

JOBS_PATH = "/documents/jobs"


def job_path(job_id: str) -> str:
    """Where a job's state is read (the Location of the POST's answer)."""
    return f"{JOBS_PATH}/{job_id}"


def result_path(job_id: str) -> str:
    """Where a finished job's zip is fetched."""
    return f"{job_path(job_id)}/result"


class DocumentJobResponse(BaseModel):
    """A document job: its state, how far it has come, and where its zip is once done."""

    job_id: str = Field(..., description="The job's id (32 hex digits).")
    state: JobState = Field(..., description=(
        "queued: waiting for this gateway's earlier jobs; extracting: reading the file and splitting sentences; "
        "embedding: sentences going to the workers; done: the zip is at result_url; failed: see error."))
    model: str = Field(..., description="The model that embeds the document.")
    json_format: str = Field(..., description="The orient of the JSON in the zip.")
    filename: str = Field(..., description="The uploaded file's name, as sent.")
    sentences_done: int = Field(..., description="Distinct sentences embedded so far (counted anew after a restart).")
    sentences_total: int | None = Field(..., description="Distinct sentences of the document; null until it is split.")
    expected_seconds_left: float | None = Field(..., description=(
        "Embedding time left at the rate so far; null until the first chunk is embedded, 0 when done."))
    error: str | None = Field(..., description="Why the job failed, as the synchronous endpoint would say it.")
    error_status: int | None = Field(..., description="The status the synchronous endpoint would have answered.")
    runs: int = Field(..., description="Runs started: 1, plus one for each restart of the gateway during the job.")
    created_at: str = Field(..., description="When the job was accepted (ISO 8601, UTC).")
    updated_at: str = Field(..., description="When its state last changed (ISO 8601, UTC).")
    status_url: str = Field(..., description="Where to read this state again.")
    result_url: str | None = Field(..., description="Where to fetch the zip; null until the job is done.")

    @classmethod
    def of(cls, job: DocumentJob, now: float) -> DocumentJobResponse:
        """The answer for `job` at time `now`."""
        return cls(job_id=job.job_id, state=job.state, model=job.parameters.model_name,
                   json_format=job.parameters.json_format, filename=job.filename, sentences_done=job.sentences_done,
                   sentences_total=job.sentences_total, expected_seconds_left=_rounded(job.expected_seconds_left(now)),
                   error=job.error, error_status=job.error_status, runs=job.runs, created_at=_iso(job.created_at),
                   updated_at=_iso(job.updated_at), status_url=job_path(job.job_id),
                   result_url=result_path(job.job_id) if job.state == "done" else None)


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat(timespec="milliseconds")


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)
