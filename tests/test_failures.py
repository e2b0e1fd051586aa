"""Crashes under load: a killed worker, writer or gateway is noticed and replaced, and nothing is lost."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from benchmarks.chaos import run_chaos
from shared.schema import database_engine
from tests.conftest import BOTH_DATABASES, MINILM
from tests.harness import Service, running

pytestmark = pytest.mark.slow


async def _burst(base_url: str, texts: list[str], concurrency: int, deadline: float) -> list[httpx.Response | Exception]:
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=deadline, limits=limits) as client:
        async def one(text: str) -> httpx.Response | Exception:
            try:
                return await client.post("/get_embedding_vector/", json={"text": text})
            except httpx.HTTPError as exc:
                return exc
        return await asyncio.gather(*(one(t) for t in texts))


def stored_texts(service: Service) -> set[str]:
    """Every text in the instance's database, read directly (SQLite or PostgreSQL)."""
    engine = database_engine(service.database_url, read_only=True)
    try:
        with engine.connect() as connection:
            return {row[0] for row in connection.exec_driver_sql("SELECT text FROM embeddings")}
    finally:
        engine.dispose()


def _kill_after(pid: int, seconds: float) -> asyncio.Task[None]:
    async def kill() -> None:
        await asyncio.sleep(seconds)
        os.kill(pid, signal.SIGKILL)
    return asyncio.ensure_future(kill())


def test_a_worker_killed_during_200_concurrent_requests_leaves_none_hanging(minilm_service: Service) -> None:
    [worker] = minilm_service.workers()
    texts = [f"worker crash sentence {i} with a few more words to embed" for i in range(200)]
    deadline = 60.0

    async def scenario() -> tuple[list[httpx.Response | Exception], float]:
        started = time.monotonic()
        killer = _kill_after(worker["pid"], 0.3)
        results = await _burst(minilm_service.base_url, texts, 200, deadline)
        await killer
        return results, time.monotonic() - started

    results, elapsed = asyncio.run(scenario())
    assert elapsed < deadline
    statuses = [r.status_code if isinstance(r, httpx.Response) else repr(r) for r in results]
    assert set(statuses) <= {200, 503}, statuses
    # Only what the worker held (its credits) could meet a second loss; the rest waits for the replacement.
    assert statuses.count(200) >= len(texts) - 8, statuses
    assert all(r.headers.get("Retry-After") for r in results if isinstance(r, httpx.Response) and r.status_code == 503)
    minilm_service.wait_for(lambda: any(w["pid"] != worker["pid"] and w["state"] == "ready"
                                        for w in minilm_service.workers()), timeout=5, message="a replacement within 5 s")
    minilm_service.remember_pids()
    assert minilm_service.embed("served by the replacement")["dimensions"] == 384


@BOTH_DATABASES
def test_a_writer_killed_during_a_burst_loses_no_row_a_client_received(minilm_service: Service) -> None:
    writer = next(row for row in minilm_service.status()["processes"] if row["role"] == "writer")
    texts = [f"writer crash sentence {i}" for i in range(300)]

    async def scenario() -> list[httpx.Response | Exception]:
        killer = _kill_after(writer["pid"], 0.2)
        results = await _burst(minilm_service.base_url, texts, 50, 60)
        await killer
        return results

    results = asyncio.run(scenario())
    answered = {text for text, r in zip(texts, results) if isinstance(r, httpx.Response) and r.status_code == 200}
    assert len(answered) == len(texts)
    minilm_service.wait_for(lambda: answered <= stored_texts(minilm_service), timeout=15,
                            message="every answered text in the database after the writer restarts")
    minilm_service.remember_pids()
    log = (minilm_service.data_dir / "logs" / "supervisor.log").read_text()
    assert f"writer (pid {writer['pid']}) killed by SIGKILL" in log


def test_a_killed_gateway_is_replaced_within_5_seconds(minilm_service: Service) -> None:
    gateway = next(row for row in minilm_service.status()["processes"] if row["role"] == "gateway")
    os.kill(gateway["pid"], signal.SIGKILL)
    started = time.monotonic()
    minilm_service.wait_for(lambda: any(row["role"] == "gateway" and row["pid"] != gateway["pid"]
                                        for row in minilm_service.control_status()["processes"]), timeout=5,
                            message="a new gateway in status")
    assert time.monotonic() - started <= 5
    minilm_service.remember_pids()
    minilm_service.wait_for(lambda: _answers(minilm_service), timeout=20, message="the new gateway to serve")


def _answers(service: Service) -> bool:
    try:
        return httpx.post(f"{service.base_url}/get_embedding_vector/", json={"text": "after gateway crash"},
                          timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_rows_a_killed_gateway_answered_with_are_stored_by_its_successor(tmp_path: Path, models_dir: Path) -> None:
    # A minute-long flush interval keeps every answered row in the gateway when it is killed.
    with running(tmp_path, models_dir, MODELS_TO_SERVE=MINILM, DB_FLUSH_INTERVAL_MS="60000") as service:
        texts = [f"answered before the gateway died, number {i}" for i in range(20)]
        for text in texts:
            service.embed(text)
        assert not set(texts) & stored_texts(service)  # still in the gateway, not yet in the database
        gateway = next(row for row in service.status()["processes"] if row["role"] == "gateway")
        os.kill(gateway["pid"], signal.SIGKILL)
        service.wait_for(lambda: set(texts) <= stored_texts(service), timeout=30,
                         message="the successor gateway to hand the journaled rows to the writer")
        service.remember_pids()


def test_a_minute_of_kills_in_turn_loses_nothing_and_every_process_serves_within_10_s(tmp_path: Path,
                                                                                      models_dir: Path) -> None:
    with running(tmp_path, models_dir, MODELS_TO_SERVE=MINILM, WORKERS_PER_MODEL="2") as service:
        report = run_chaos(service, seconds=24, interval=3, concurrency=8, workers=2)
        service.remember_pids()
    assert [kill.role for kill in report.kills][:4] == ["worker", "writer", "worker", "gateway"]
    assert len(report.answered) > 100
    assert report.missing == 0
    assert all(kill.recovered_after is not None and kill.recovered_after <= 10 for kill in report.kills), report.lines()
    assert report.all_serving_after_last_kill is not None and report.all_serving_after_last_kill <= 10, report.lines()
