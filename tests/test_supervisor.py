"""The supervisor as an operator uses it: start, status, scale, stop, crashes, side-by-side instances."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import MINILM
from tests.harness import PROJECT_ROOT, Service, free_port, running

pytestmark = pytest.mark.slow


async def _fire(base_url: str, texts: list[str], concurrency: int = 100) -> list[int]:
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:
        responses = await asyncio.gather(*(client.post("/get_embedding_vector/", json={"text": t}) for t in texts))
    return [r.status_code for r in responses]


def _stored_texts(service: Service) -> list[str]:
    with sqlite3.connect(service.data_dir / "llama_embeddings.sqlite") as connection:
        return [row[0] for row in connection.execute("SELECT text FROM embeddings WHERE model_name = ?", (MINILM,))]


def test_500_concurrent_requests_store_each_text_once_and_stop_leaves_no_process(minilm_service: Service) -> None:
    distinct = [f"concurrent sentence number {i}" for i in range(100)]
    statuses = asyncio.run(_fire(minilm_service.base_url, distinct * 5))
    assert statuses == [200] * 500
    minilm_service.stop()
    stored = _stored_texts(minilm_service)
    assert sorted(stored) == sorted(distinct)
    assert minilm_service.leftover_processes() == []


def test_by_default_a_lone_model_gets_one_thread_workers_filling_the_cores(tmp_path: Path, models_dir: Path) -> None:
    with running(tmp_path, models_dir, MODELS_TO_SERVE=MINILM, WORKERS_PER_MODEL="auto") as service:
        service.wait_for(lambda: sum(w["state"] == "ready" for w in service.workers()) == (os.cpu_count() or 1),
                         timeout=60, message="one worker per core")
        assert {w["threads"] for w in service.workers()} == {1}
        assert service.embed("served by one of them")["embedding"]


def test_status_lists_every_process_with_pid_state_memory_and_requests(minilm_service: Service) -> None:
    minilm_service.embed("count me")
    time.sleep(1.2)
    status = minilm_service.status()
    roles = sorted(row["role"] for row in status["processes"])
    assert roles == ["gateway", "worker", "writer"]
    for row in status["processes"]:
        assert row["state"] == "ready" and row["pid"] > 0 and row["rss_bytes"] > 0
    [worker] = minilm_service.workers()
    assert worker["requests"] == 1 and worker["threads"] == os.cpu_count()
    table = minilm_service.cli("status").stdout
    assert "ROLE" in table and "worker" in table and MINILM in table


def test_scaling_up_and_down_under_load_fails_no_request(minilm_service: Service) -> None:
    results: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=minilm_service.base_url, timeout=120) as client:
            i = 0
            while not stop.is_set():
                i += 1
                body = {"text": f"scaling {threading.get_ident()} {i}"}
                results.append(client.post("/get_embedding_vector/", json=body).status_code)

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        minilm_service.cli("scale", MINILM, "2")
        minilm_service.wait_for(lambda: sum(w["state"] == "ready" for w in minilm_service.workers()) == 2
                                and len(minilm_service.workers()) == 2, timeout=60, message="two workers")
        assert {w["threads"] for w in minilm_service.workers()} == {max(1, (os.cpu_count() or 1) // 2)}
        minilm_service.cli("scale", MINILM, "1")
        minilm_service.wait_for(lambda: len(minilm_service.workers()) == 1
                                and minilm_service.workers()[0]["state"] == "ready", timeout=60, message="one worker")
        time.sleep(1)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert len(results) > 50
    assert set(results) == {200}


def test_scaling_beyond_the_thread_budget_is_refused_with_the_reason(minilm_service: Service) -> None:
    result = minilm_service.cli("scale", MINILM, str((os.cpu_count() or 1) + 1), check=False)
    assert result.returncode != 0
    assert "WORKER_THREADS_TOTAL" in result.stderr


def test_a_killed_worker_is_replaced_and_serves_again(minilm_service: Service) -> None:
    [worker] = minilm_service.workers()
    os.kill(worker["pid"], signal.SIGKILL)
    minilm_service.wait_for(
        lambda: any(w["pid"] != worker["pid"] and w["state"] == "ready" for w in minilm_service.workers()),
        timeout=30, message="a replacement worker")
    minilm_service.remember_pids()
    assert minilm_service.embed("after the crash")["dimensions"] == 384
    log = (minilm_service.data_dir / "logs" / "supervisor.log").read_text()
    assert "killed by SIGKILL" in log


def test_two_instances_run_side_by_side_and_stop_independently(tmp_path: Path, models_dir: Path) -> None:
    first = Service(tmp_path / "a", models_dir, {"MODELS_TO_SERVE": MINILM, "WORKER_THREADS_TOTAL": "1"})
    second = Service(tmp_path / "b", models_dir, {"MODELS_TO_SERVE": MINILM, "WORKER_THREADS_TOTAL": "1"})
    try:
        first.start()
        second.start()
        assert first.embed("instance a")["dimensions"] == 384
        assert second.embed("instance b")["dimensions"] == 384
        first.stop()
        assert first.leftover_processes() == []
        assert second.embed("still here")["dimensions"] == 384
    finally:
        first.stop()
        second.stop()
    assert second.leftover_processes() == []


def test_a_worker_on_another_host_joins_over_tcp(tmp_path: Path, models_dir: Path) -> None:
    port = free_port()
    service = Service(tmp_path, models_dir, {
        "MODELS_TO_SERVE": MINILM, "WORKER_BIND_ADDRESS": f"tcp://127.0.0.1:{port}", "WORKER_THREADS_TOTAL": "1",
    })
    remote: subprocess.Popen[bytes] | None = None
    try:
        service.start()
        # A worker started by hand, as on another machine: it only knows the gateway's tcp address.
        env = {**service.env, "WORKER_CONNECT_ADDRESS": f"tcp://127.0.0.1:{port}", "DATA_DIR": str(tmp_path / "remote")}
        model_path = models_dir / "all-minilm-l6-v2.f16.gguf"
        remote = subprocess.Popen([sys.executable, "-m", "workers", "embedder", "--model", MINILM, "--worker-id", "99",
                                   "--threads", "1", "--model-path", str(model_path)], cwd=PROJECT_ROOT, env=env)
        service.wait_for(lambda: any(row["pid"] == remote.pid for row in _gateway_workers(service)), timeout=30,
                         message="the remote worker to register")
        local = [w["pid"] for w in service.workers()]
        for pid in local:
            os.kill(pid, signal.SIGSTOP)  # only the remote worker can answer now
        try:
            assert service.embed("served over tcp")["dimensions"] == 384
        finally:
            for pid in local:
                os.kill(pid, signal.SIGCONT)
    finally:
        if remote is not None:
            remote.terminate()
            remote.wait(timeout=20)
        service.stop()
    assert service.leftover_processes() == []


def _gateway_workers(service: Service) -> list[dict[str, object]]:
    # The gateway's registry travels in its status report; read it from the CLI's JSON.
    status = service.status()
    gateway = next(row for row in status["processes"] if row["role"] == "gateway")
    return list(gateway.get("workers", []))
