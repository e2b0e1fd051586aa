"""The service on a CPU whose kernels crash, and after crashes: canary fallback, backoff that heals, 503s that say why.

A test-only setting (TEST_ENGINE_CRASH, read by workers only) makes llama.cpp's first embed segfault for real,
as the AMX kernel does on quantized weights; the other crashes are real signals sent to real processes.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.conftest import MINILM, SMOLLM
from tests.harness import Service, running

pytestmark = pytest.mark.slow


def _post(service: Service, model: str, text: str, timeout: float = 30) -> httpx.Response:
    return httpx.post(f"{service.base_url}/get_embedding_vector/", json={"text": text, "model_name": model},
                      timeout=timeout)


def _ready_worker(service: Service, model: str, other_than: int | None = None) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def ready() -> bool:
        found[:] = [w for w in service.workers(model) if w["state"] == "ready" and w["pid"] != other_than]
        return bool(found)

    service.wait_for(ready, timeout=30, message=f"a ready worker of {model}")
    service.remember_pids()
    return found[0]


@pytest.fixture(scope="module")
def crashing_cpu(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Service]:
    """MiniLM's repacked kernel and every SmolLM2 kernel segfault, as on a CPU that cannot run them."""
    with running(tmp_path_factory.mktemp("service"), models_dir,
                 TEST_ENGINE_CRASH=f"{MINILM}:repack,{SMOLLM}:always") as service:
        yield service


def test_a_model_whose_repacked_kernel_crashes_is_served_with_repacking_off(crashing_cpu: Service) -> None:
    assert _post(crashing_cpu, MINILM, "served without repacking").status_code == 200
    # SmolLM2's failure gives its thread to MiniLM, whose worker is then replaced by one of two threads.
    crashing_cpu.wait_for(lambda: [w["state"] for w in crashing_cpu.workers(MINILM)] == ["ready"], timeout=30,
                          message="one ready MiniLM worker")
    [worker] = crashing_cpu.workers(MINILM)
    assert worker["weight_repack"] is False
    assert worker["restarts"] == 0  # the crash happened in the canary, never in the worker


def test_the_canary_crash_is_logged_with_its_signal(crashing_cpu: Service) -> None:
    logs = "".join(path.read_text() for path in (crashing_cpu.data_dir / "logs").glob(f"worker-{MINILM}-*.log"))
    assert f"canary for {MINILM} with weight repacking on: killed by SIGSEGV" in logs
    assert f"canary for {MINILM} with weight repacking off: ok" in logs


def test_a_model_that_crashes_with_every_loading_answers_503_at_once_with_the_reason(crashing_cpu: Service) -> None:
    started = time.monotonic()
    response = _post(crashing_cpu, SMOLLM, "never embedded")
    assert time.monotonic() - started < 2  # not after WORKER_WAIT_SECONDS
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    detail = response.json()["detail"]
    assert f"model '{SMOLLM}' has no live worker" in detail
    assert "weight repacking on: killed by SIGSEGV; weight repacking off: killed by SIGSEGV" in detail


def test_a_model_that_cannot_run_is_failed_in_status_and_ready_instead_of_crash_looping(crashing_cpu: Service) -> None:
    time.sleep(3)  # several reconcile rounds: a crash loop would have started workers again
    status = crashing_cpu.status()
    assert "killed by SIGSEGV" in status["failed_models"][SMOLLM]
    assert crashing_cpu.workers(SMOLLM) == []
    starts = (crashing_cpu.data_dir / "logs" / "supervisor.log").read_text().count(f"started worker {SMOLLM}#")
    assert starts == 1
    ready = httpx.get(f"{crashing_cpu.base_url}/ready").json()
    assert any("killed by SIGSEGV" in reason and SMOLLM in reason for reason in ready["reasons"])


def test_the_other_models_are_not_affected(crashing_cpu: Service) -> None:
    response = httpx.post(f"{crashing_cpu.base_url}/get_embedding_vectors/",
                          json={"texts": ["one", "two", "three"], "model_name": MINILM}, timeout=30)
    assert response.status_code == 200 and len(response.json()["embeddings"]) == 3


@pytest.fixture
def slow_backoff(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Service]:
    """Backoff of 2, 4, 8 s, and requests that wait at most 1 s for a worker."""
    with running(tmp_path_factory.mktemp("service"), models_dir, MODELS_TO_SERVE=MINILM,
                 RESTART_BACKOFF_INITIAL_SECONDS="2", WORKER_WAIT_SECONDS="1") as service:
        yield service


def _segfault_three_times(service: Service) -> None:
    """SIGSEGV the worker, wait for its replacement, twice; then a third time, leaving the 8 s backoff to run."""
    previous = None
    for _ in range(3):
        worker = _ready_worker(service, MINILM, other_than=previous)
        os.kill(worker["pid"], signal.SIGSEGV)
        previous = worker["pid"]
    service.wait_for(lambda: not service.workers(MINILM), timeout=5, message="the third death to be reaped")


def test_restart_delays_double_per_death_and_the_503_names_the_cause_and_the_next_restart(slow_backoff: Service) -> None:
    _segfault_three_times(slow_backoff)
    response = _post(slow_backoff, MINILM, "while the worker waits out its backoff")
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert re.search(rf"model '{MINILM}' has no live worker: its worker was killed by SIGSEGV 3 times in \d+ s; "
                     r"next restart in [5-8] s \(see logs/supervisor.log\)", detail), detail
    assert 5 <= int(response.headers["Retry-After"]) <= 10
    log = (slow_backoff.data_dir / "logs" / "supervisor.log").read_text()
    assert re.findall(r"killed by SIGSEGV; restarting in (\d+)s", log) == ["2", "4", "8"]


def test_a_slot_that_died_three_times_is_restarted_anyway(slow_backoff: Service) -> None:
    _segfault_three_times(slow_backoff)
    worker = _ready_worker(slow_backoff, MINILM)  # within the 8 s backoff plus a start
    assert worker["restarts"] == 3 and worker["last_exit"] == "killed by SIGSEGV"
    assert _post(slow_backoff, MINILM, "after three crashes").status_code == 200
    assert slow_backoff.status()["failed_models"] == {}


def test_scale_resets_the_backoff_at_once(slow_backoff: Service) -> None:
    _segfault_three_times(slow_backoff)
    slow_backoff.cli("scale", MINILM, "1")
    started = time.monotonic()
    _ready_worker(slow_backoff, MINILM)
    assert time.monotonic() - started < 6  # sooner than the 8 s the backoff had left


def test_status_shows_each_slots_restarts_and_last_exit(slow_backoff: Service) -> None:
    worker = _ready_worker(slow_backoff, MINILM)
    os.kill(worker["pid"], signal.SIGSEGV)
    slow_backoff.wait_for(lambda: any(w["pid"] != worker["pid"] for w in slow_backoff.workers(MINILM)), timeout=10,
                          message="a replacement in status")
    slow_backoff.remember_pids()
    [row] = slow_backoff.workers(MINILM)
    assert (row["slot"], row["restarts"], row["last_exit"]) == (0, 1, "killed by SIGSEGV")
    table = slow_backoff.cli("status").stdout
    assert "RESTARTS" in table and "killed by SIGSEGV" in table
