"""Documents as jobs: POST /documents/jobs answers 202 at once, GET shows the progress, the zip is the synchronous
endpoint's, a failed job says why, and a job outlives the gateway process that ran it.

The service tests share one instance with two gateway processes (jobs belong to the one that accepted them; any
answers for any), two MiniLM workers, a small upload limit and chunks of 32 sentences: progress and a kill mid-job
need many chunks, not many sentences, so a few hundred sentences make as many chunks as 1,200 do by default.
The first tests drive DocumentJobs itself over a fake DocumentService: which process resumes which stored job,
and which finished jobs retention deletes.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator, cast

import httpx
import numpy as np
import pytest

from gateway.documents.jobs.record import DocumentJob, JobState, new_job_id
from gateway.documents.jobs.runner import DocumentJobs
from gateway.documents.jobs.store import JobStore
from gateway.documents.parameters import DocumentParameters
from gateway.documents.service import DocumentService, EmbeddedDocument, ProgressCallback
from gateway.documents.upload import Upload
from shared.settings import load_settings
from tests.conftest import MINILM
from tests.document_files import ghostscript_pdf, image_only_pdf, png_image, prose
from tests.harness import Service, running, until

pytestmark = pytest.mark.slow

UPLOAD_LIMIT_MB = 8
CHUNK_SENTENCES = 32
JOBS = "/documents/jobs"
ACTIVE = ("queued", "extracting", "embedding")


# --- DocumentJobs over a fake DocumentService: ownership, resuming, retention ----------------------------------

class _FakeDocuments:
    """Embeds any upload as one sentence with a constant vector, reporting progress as DocumentService does."""

    async def embed(self, upload: Upload, model: str, client_ip: str | None,
                    progress: ProgressCallback | None = None, collection: str | None = None) -> EmbeddedDocument:
        if progress is not None:
            progress(0, 1)
            progress(1, 1)
        return EmbeddedDocument(["One sentence of the fake document."], np.ones((1, 4), dtype=np.float32),
                                {"model": model})


def _stored_job(store: JobStore, gateway: int, state: JobState = "queued", age_hours: float = 0.0) -> DocumentJob:
    then = time.time() - age_hours * 3600
    job = DocumentJob(job_id=new_job_id(), gateway=gateway, filename="stored.txt", state=state,
                      parameters=DocumentParameters(model_name=MINILM, json_format="records"),
                      created_at=then, updated_at=then)
    store.create(job, b"Some stored text of a job.")
    return job


def _states(store: JobStore, jobs: list[DocumentJob]) -> list[JobState | None]:
    """Each job's state as stored now (None: deleted)."""
    return [stored.state if (stored := store.load(job.job_id)) is not None else None for job in jobs]


def _run_jobs_of(tmp_path: Path, index: int, gateway_processes: int, done: Callable[[], bool],
                 retention_hours: float = 24) -> None:
    """Gateway `index`'s DocumentJobs, from its start until `done()` holds (10 s at most: then the test's
    assertions say what did not happen) and half a second more, in which a job it should not touch would be."""
    settings = load_settings(overrides={"DATA_DIR": str(tmp_path), "GATEWAY_PROCESSES": str(gateway_processes),
                                        "DOCUMENT_JOB_RETENTION_HOURS": str(retention_hours)})

    async def run() -> None:
        jobs = DocumentJobs(settings, cast(DocumentService, _FakeDocuments()), index)
        await jobs.start()
        # Polled rather than slept: the fake's jobs take milliseconds, but on a loaded machine a fixed second
        # was once not enough for both jobs' progress to be saved.
        await until(done, 10)
        await asyncio.sleep(0.5)
        await jobs.stop()

    asyncio.run(run())


def test_a_starting_gateway_resumes_its_own_unfinished_jobs_and_no_other_gateways(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs")
    own = [_stored_job(store, 1, "queued"), _stored_job(store, 1, "embedding")]
    others = _stored_job(store, 0, "extracting")
    _run_jobs_of(tmp_path, index=1, gateway_processes=2, done=lambda: _states(store, own) == ["done", "done"])
    assert _states(store, own) == ["done", "done"]
    assert store.load(others.job_id) == others
    assert store.open_result(others.job_id) is None


def test_gateway_0_adopts_the_jobs_of_gateway_indexes_that_no_longer_exist(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs")
    orphan = _stored_job(store, 3, "embedding")
    _run_jobs_of(tmp_path, index=0, gateway_processes=2, done=lambda: _states(store, [orphan]) == ["done"])
    adopted = store.load(orphan.job_id)
    assert adopted is not None and adopted.state == "done" and adopted.gateway == 0 and adopted.runs == 1


def test_retention_deletes_only_the_gateways_own_jobs_finished_longer_ago(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs")
    old_done = _stored_job(store, 1, "done", age_hours=3)
    old_failed = _stored_job(store, 1, "failed", age_hours=3)
    recent = _stored_job(store, 1, "done", age_hours=1)
    other_gateways = _stored_job(store, 0, "done", age_hours=3)
    _run_jobs_of(tmp_path, index=1, gateway_processes=2, retention_hours=2,
                 done=lambda: _states(store, [old_done, old_failed]) == [None, None])
    assert store.load(old_done.job_id) is None and store.load(old_failed.job_id) is None
    assert store.load(recent.job_id) == recent and store.load(other_gateways.job_id) == other_gateways
    assert sorted(path.name for path in (tmp_path / "jobs").iterdir()) == sorted([recent.job_id, other_gateways.job_id])


def test_the_time_left_follows_the_rate_so_far() -> None:
    job = DocumentJob(job_id=new_job_id(), gateway=0, filename="a.txt", state="embedding", created_at=0, updated_at=0,
                      parameters=DocumentParameters(model_name=MINILM, json_format="records"),
                      sentences_done=100, sentences_total=400, embedding_since=1000.0, progress_at=1010.0)
    assert job.expected_seconds_left(1010.0) == pytest.approx(30.0)  # 10 sentences/s, 300 left
    assert job.expected_seconds_left(1015.0) == pytest.approx(25.0)
    assert job.model_copy(update={"sentences_done": 0}).expected_seconds_left(1010.0) is None


# --- the real service -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Service]:
    with running(tmp_path_factory.mktemp("jobs"), models_dir, MODELS_TO_SERVE=MINILM, WORKERS_PER_MODEL="2",
                 GATEWAY_PROCESSES="2", MAX_UPLOAD_SIZE_MB=str(UPLOAD_LIMIT_MB),
                 DOCUMENT_CHUNK_SENTENCES=str(CHUNK_SENTENCES)) as started:
        yield started


def _request(service: Service, method: str, path: str, **options: Any) -> httpx.Response:
    # A new connection each time: the kernel hands it to either gateway process.
    with httpx.Client(base_url=service.base_url, timeout=120) as client:
        return client.request(method, path, **options)


def _submit(service: Service, content: bytes, filename: str = "document.pdf", **params: str) -> dict[str, Any]:
    response = _request(service, "POST", JOBS, params=params, files={"file": (filename, content)})
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"{JOBS}/{response.json()['job_id']}"
    return response.json()


def _state(service: Service, job_id: str) -> dict[str, Any]:
    response = _request(service, "GET", f"{JOBS}/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


def _follow(service: Service, job_id: str, timeout: float = 120) -> list[dict[str, Any]]:
    """Every state seen, polling until the job is done or failed (a gateway being replaced may drop a poll)."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            seen.append(_state(service, job_id))
        except httpx.TransportError:
            continue
        if seen[-1]["state"] not in ACTIVE:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not finished after {timeout}s: {seen[-1] if seen else None}")


def _synchronous(service: Service, content: bytes, filename: str, **params: str) -> httpx.Response:
    response = _request(service, "POST", "/get_all_embeddings_for_document/", params=params,
                        files={"file": (filename, content)})
    assert response.status_code == 200, response.text
    return response


def _members(content: bytes) -> dict[str, bytes]:
    archive = zipfile.ZipFile(io.BytesIO(content))
    return {name: archive.read(name) for name in archive.namelist()}


def _assert_same_answer(job_zip: bytes, sync_zip: bytes) -> None:
    """The same files and JSON; the metadata may differ only in whether the store answered."""
    job, sync = _members(job_zip), _members(sync_zip)
    assert sorted(job) == sorted(sync)
    [data] = [name for name in job if not name.endswith(".metadata.json")]
    [metadata] = [name for name in job if name.endswith(".metadata.json")]
    assert job[data] == sync[data]
    assert ({**json.loads(job[metadata]), "from_store": None} == {**json.loads(sync[metadata]), "from_store": None})


def _pdf(sentence_count: int, per_page: int, seed: int) -> bytes:
    sentences = prose(sentence_count, seed=seed)
    return ghostscript_pdf([" ".join(sentences[start:start + per_page]) for start in range(0, sentence_count, per_page)])


def test_a_job_on_a_300_page_pdf_reports_growing_progress_and_ends_in_the_synchronous_zip(service: Service) -> None:
    content = _pdf(300, per_page=1, seed=1601)
    job = _submit(service, content, "three-hundred.pdf", json_format="split")
    seen = _follow(service, job["job_id"])
    assert seen[-1]["state"] == "done", seen[-1]
    done = [state["sentences_done"] for state in seen if state["state"] == "embedding"]
    assert done == sorted(done) and len({count for count in done if 0 < count < 300}) >= 3, done
    assert {state["sentences_total"] for state in seen if state["state"] in ("embedding", "done")} == {300}
    assert any(state["expected_seconds_left"] for state in seen if state["state"] == "embedding")
    assert seen[-1]["result_url"] == f"{JOBS}/{job['job_id']}/result"
    result = _request(service, "GET", seen[-1]["result_url"])
    assert result.status_code == 200 and result.headers["content-type"] == "application/zip"
    assert result.headers["content-disposition"] == 'attachment; filename="three-hundred.zip"'
    sync = _synchronous(service, content, "three-hundred.pdf", json_format="split")
    assert json.loads(_members(sync.content)["three-hundred.metadata.json"])["from_store"] is True  # stored by the job
    _assert_same_answer(result.content, sync.content)


def test_a_1000_page_pdf_is_accepted_before_its_text_is_extracted_and_no_poll_takes_a_second(service: Service) -> None:
    pool = prose(100, seed=1602)  # 10,000 sentences of 100 distinct ones: the pages are what costs here
    content = ghostscript_pdf([" ".join(pool[(page * 10 + i) % 100] for i in range(10)) for page in range(1000)])
    started = time.monotonic()
    job = _submit(service, content, "thousand.pdf")
    accepted_after = time.monotonic() - started
    right_after = _state(service, job["job_id"])
    assert job["state"] == "queued" and right_after["state"] in ("queued", "extracting"), right_after
    assert right_after["sentences_total"] is None
    assert accepted_after < 2.0, accepted_after
    slowest = 0.0
    while True:
        polled = time.monotonic()
        state = _state(service, job["job_id"])
        slowest = max(slowest, time.monotonic() - polled)
        if state["state"] not in ACTIVE:
            break
        time.sleep(0.2)
    assert state["state"] == "done" and state["sentences_total"] == 100, state
    assert slowest < 1.0, slowest
    print(f"1000-page PDF ({len(content) / 1e6:.1f} MB): 202 after {accepted_after * 1000:.0f} ms, slowest poll "
          f"{slowest * 1000:.0f} ms")


def test_a_job_whose_gateway_is_killed_mid_job_is_resumed_and_gives_the_right_zip(service: Service) -> None:
    content = _pdf(16 * CHUNK_SENTENCES, per_page=4, seed=1603)  # 16 chunks: 4 are in flight at the kill
    job_id = _submit(service, content, "survivor.pdf")["job_id"]
    service.wait_for(lambda: _state(service, job_id)["sentences_done"] > 0, timeout=60, message="embedding under way")
    owner = json.loads((service.data_dir / "jobs" / job_id / "job.json").read_text())["gateway"]
    [victim] = [row for row in service.control_status()["processes"] if row["role"] == "gateway" and row["slot"] == owner]
    os.kill(int(victim["pid"]), signal.SIGKILL)
    final = _follow(service, job_id, timeout=180)[-1]
    assert final["state"] == "done" and final["runs"] == 2, final
    result = _request(service, "GET", final["result_url"])
    assert result.status_code == 200
    _assert_same_answer(result.content, _synchronous(service, content, "survivor.pdf").content)
    service.wait_for(lambda: any(row["role"] == "gateway" and row["slot"] == owner and row["pid"] != victim["pid"]
                                 and row["state"] == "ready" for row in service.control_status()["processes"]),
                     timeout=30, message="the killed gateway's replacement")
    service.remember_pids()


def test_a_job_on_a_pdf_without_a_text_layer_fails_and_says_why(service: Service) -> None:
    job = _submit(service, image_only_pdf(), "scan.pdf")
    final = _follow(service, job["job_id"])[-1]
    assert final["state"] == "failed" and final["error_status"] == 422, final
    assert "no extractable text; OCR is not supported" in final["error"]
    assert final["result_url"] is None


def test_the_result_of_a_failed_job_is_409_naming_its_state_and_error(service: Service) -> None:
    job = _submit(service, image_only_pdf(), "scan-again.pdf")
    _follow(service, job["job_id"])
    response = _request(service, "GET", f"{JOBS}/{job['job_id']}/result")
    assert response.status_code == 409
    assert "failed" in response.json()["detail"] and "OCR is not supported" in response.json()["detail"]


def test_the_result_of_a_job_not_yet_done_is_409_naming_its_state(service: Service) -> None:
    job = _submit(service, " ".join(prose(150, seed=1604)).encode(), "pending.txt")
    response = _request(service, "GET", f"{JOBS}/{job['job_id']}/result")
    assert response.status_code == 409, response.text
    assert any(f" is {state}," in response.json()["detail"] for state in ACTIVE), response.json()
    _follow(service, job["job_id"])  # leave no job running for the next test


def test_the_query_wins_over_the_form_and_the_form_is_read(service: Service) -> None:
    response = _request(service, "POST", JOBS, params={"json_format": "values"},
                        data={"json_format": "index", "llm_model_name": MINILM},
                        files={"file": ("fields.txt", " ".join(prose(5, seed=1605)).encode())})
    assert response.status_code == 202, response.text
    assert response.json()["json_format"] == "values" and response.json()["model"] == MINILM


@pytest.mark.parametrize("path", [f"{JOBS}/{'0' * 32}", f"{JOBS}/{'0' * 32}/result"], ids=["state", "result"])
def test_an_unknown_job_is_404(service: Service, path: str) -> None:
    response = _request(service, "GET", path)
    assert response.status_code == 404 and "no document job" in response.json()["detail"]


@pytest.mark.parametrize("job_id", ["not-a-job", "0" * 31, "A" * 32, "g" * 32, "0" * 33])
def test_a_malformed_job_id_is_422(service: Service, job_id: str) -> None:
    for path in (f"{JOBS}/{job_id}", f"{JOBS}/{job_id}/result"):
        response = _request(service, "GET", path)
        assert response.status_code == 422, (path, response.text)
        assert "32 lower-case hex digits" in response.json()["detail"]


_TEXT = ("a.txt", b"A sentence long enough to embed.")


@pytest.mark.parametrize(("options", "status", "detail"), [
    ({"params": {"model_name": "no-such-model"}, "files": {"file": _TEXT}}, 422, "no-such-model"),
    ({"data": {"llm_model_name": "no-such-model"}, "files": {"file": _TEXT}}, 422, "no-such-model"),
    ({"params": {"json_format": "sideways"}, "files": {"file": _TEXT}}, 422, "json_format"),
    ({"data": {"file": "not an upload"}}, 422, "multipart/form-data"),
    ({"files": {"file": ("empty.txt", b"")}}, 422, "empty"),
    ({"files": {"file": ("big.txt", b"x" * (UPLOAD_LIMIT_MB * 1024 * 1024 + 1))}}, 413, "MAX_UPLOAD_SIZE_MB"),
], ids=["unknown model in the query", "unknown model in the form", "unknown json_format", "not multipart",
        "empty file", "too large"])
def test_a_bad_upload_is_refused_before_any_job_exists(service: Service, options: dict[str, Any], status: int,
                                                       detail: str) -> None:
    jobs = service.data_dir / "jobs"
    before = set(os.listdir(jobs)) if jobs.exists() else set()
    response = _request(service, "POST", JOBS, **options)
    assert response.status_code == status and detail in response.json()["detail"], response.text
    assert (set(os.listdir(jobs)) if jobs.exists() else set()) == before


def test_an_image_upload_is_refused_with_415(service: Service) -> None:
    response = _request(service, "POST", JOBS, files={"file": ("picture.png", png_image())})
    assert response.status_code == 415 and "image/png" in response.json()["detail"]
