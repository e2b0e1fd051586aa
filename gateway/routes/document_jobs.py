"""Documents as jobs: upload a file and get a job id at once; poll its state; fetch its zip when it is done.

The upload is checked as the synchronous endpoint checks it (model, orient, size, and what the file is, which
libmagic tells from its first bytes), and stored; nothing is extracted or embedded before the answer, so even a
1000-page PDF is accepted in about the time its bytes take to arrive and be written to disk.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from gateway.documents.jobs.record import DocumentJob, is_job_id
from gateway.documents.jobs.schemas import JOBS_PATH, DocumentJobResponse, job_path
from gateway.documents.packaging import read_blocks, safe_stem
from gateway.documents.sniffing import sniff
from gateway.errors import BadRequest, Conflict, NotFound
from gateway.openapi import Endpoint
from gateway.routes.documents import UPLOAD_FORM, UPLOAD_QUERY, ZIP_ANSWER, read_document_request
from gateway.state import services
from gateway.validation import client_ip


async def create_document_job(request: Request) -> Response:
    """POST /documents/jobs: accept an upload as a job (202, with its state and a Location to poll)."""
    upload, parameters = await read_document_request(request)
    sniff(upload.content)  # an image or an empty file is refused now (415, 422) rather than as a failed job
    job = await services(request).jobs.submit(upload, parameters, client_ip(request))
    return JSONResponse(_answer(job), status_code=202, headers={"Location": job_path(job.job_id)})


async def get_document_job(request: Request) -> Response:
    """GET /documents/jobs/{job_id}: the job's state, progress and time left."""
    return JSONResponse(_answer(await _job(request)))


async def get_document_job_result(request: Request) -> Response:
    """GET /documents/jobs/{job_id}/result: the finished job's zip, as the synchronous endpoint answers it."""
    job = await _job(request)
    if job.state != "done":
        why = f": {job.error}" if job.error else "; try again when its state is done"
        raise Conflict(f"document job {job.job_id} is {job.state}, not done{why}")
    opened = await services(request).jobs.result(job.job_id)
    if opened is None:  # deleted (retention) between reading its state and opening its zip
        raise NotFound(f"no document job {job.job_id}")
    handle, size = opened
    stem = safe_stem(job.filename)
    return StreamingResponse(read_blocks(handle), media_type="application/zip",
                             headers={"Content-Disposition": f'attachment; filename="{stem}.zip"',
                                      "Content-Length": str(size)})


async def _job(request: Request) -> DocumentJob:
    job_id = request.path_params["job_id"]
    if not is_job_id(job_id):
        raise BadRequest(f"a job id is 32 lower-case hex digits, got {job_id[:80]!r}")
    job = await services(request).jobs.job(job_id)
    if job is None:
        raise NotFound(f"no document job {job_id} (unknown, or deleted DOCUMENT_JOB_RETENTION_HOURS after it finished)")
    return job


def _answer(job: DocumentJob) -> dict[str, object]:
    return DocumentJobResponse.of(job, time.time()).model_dump()


_ID_ERRORS = (404, 422)
ENDPOINTS = [
    Endpoint("POST", JOBS_PATH, create_document_job,
             "Accept a text or PDF file as a job: 202 with its id at once; it is embedded in the background", "documents",
             response_model=DocumentJobResponse, success_status=202, query=UPLOAD_QUERY, errors=(413, 415, 422),
             request_content=UPLOAD_FORM),
    Endpoint("GET", f"{JOBS_PATH}/{{job_id}}", get_document_job,
             "A document job's state, sentences done of total and expected time left", "documents",
             response_model=DocumentJobResponse, errors=_ID_ERRORS),
    Endpoint("GET", f"{JOBS_PATH}/{{job_id}}/result", get_document_job_result,
             "A finished document job's zip (409 while it is not done)", "documents",
             response_content=ZIP_ANSWER, errors=(*_ID_ERRORS, 409)),
]
