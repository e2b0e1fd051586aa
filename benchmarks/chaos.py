"""Chaos: mixed load while SIGKILL hits a worker, the writer, a worker and the gateway in turn.

Prints the vectors returned, those missing from the database afterwards (must be 0), the requests that failed
by kind, each kill's recovery (seconds until that role serves again), and the seconds from the last kill to the
next good answer and until every process serves again (goal: within 10 s).

Usage: .venv/bin/python -m benchmarks.chaos [--seconds 60] [--interval 6] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.corpus import sentences
from tests.harness import PROJECT_ROOT, Service, running

MODELS_DIR = PROJECT_ROOT / "data" / "test-models"
MODEL = "all-minilm-l6-v2"
KILL_ORDER = ("worker", "writer", "worker", "gateway")


@dataclass
class Kill:
    role: str
    pid: int
    at: float  # monotonic
    ready_before: frozenset[int]  # the role's ready processes at the kill: a new one is a replacement
    recovered_after: float | None = None  # seconds until a new process of the role was ready
    all_serving_after: float | None = None  # seconds until every process was ready (before the next kill)


@dataclass
class ChaosReport:
    answered: set[str] = field(default_factory=set)
    failures: Counter[str] = field(default_factory=Counter)
    kills: list[Kill] = field(default_factory=list)
    good_answer_after_last_kill: float | None = None
    missing: int = -1

    @property
    def all_serving_after_last_kill(self) -> float | None:
        return self.kills[-1].all_serving_after if self.kills else None

    def lines(self) -> list[str]:
        recoveries = [k.recovered_after for k in self.kills]
        out = [f"vectors returned: {len(self.answered)}",
               f"vectors missing from the database: {self.missing}",
               f"requests failed: {sum(self.failures.values())} "
               f"({', '.join(f'{kind} {n}' for kind, n in self.failures.most_common()) or 'none'})"]
        for kill in self.kills:
            after = "not within the run" if kill.recovered_after is None else f"{kill.recovered_after:.1f} s"
            out.append(f"  killed {kill.role:7} pid {kill.pid:>7}: serving again after {after}")
        out.append(f"slowest recovery: {max((r for r in recoveries if r is not None), default=float('nan')):.1f} s")
        out.append(f"last kill -> next good answer: {_seconds(self.good_answer_after_last_kill)}")
        out.append(f"last kill -> every process serving: {_seconds(self.all_serving_after_last_kill)}")
        return out


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def _ready_pids(service: Service) -> dict[str, set[int]]:
    pids: dict[str, set[int]] = {"worker": set(), "writer": set(), "gateway": set()}
    for row in service.control_status()["processes"]:
        if row["state"] == "ready":
            pids[row["role"]].add(row["pid"])
    return pids


def _all_serving(ready: dict[str, set[int]], workers: int) -> bool:
    return len(ready["worker"]) >= workers and bool(ready["writer"]) and bool(ready["gateway"])


async def _load(service: Service, texts: list[str], concurrency: int, stop_at: float, report: ChaosReport,
                good_answers: list[float]) -> None:
    source = iter(texts)

    async def client_loop() -> None:
        async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as client:
            while time.monotonic() < stop_at:
                text = next(source)
                try:
                    response = await client.post("/get_embedding_vector/", json={"text": text, "model_name": MODEL})
                except httpx.HTTPError as exc:
                    report.failures[type(exc).__name__] += 1
                    await asyncio.sleep(0.05)  # a refused connection answers at once: do not spin
                    continue
                if response.status_code == 200:
                    report.answered.add(text)
                    good_answers.append(time.monotonic())
                else:
                    report.failures[f"HTTP {response.status_code}"] += 1

    await asyncio.gather(*(client_loop() for _ in range(concurrency)))


async def _kill_in_turn(service: Service, seconds: float, interval: float, report: ChaosReport) -> None:
    roles = itertools.cycle(KILL_ORDER)
    started = time.monotonic()
    await asyncio.sleep(interval / 2)
    role = next(roles)
    while time.monotonic() - started < seconds - interval / 2:
        ready = await asyncio.to_thread(_ready_pids, service)
        if not ready[role]:  # still recovering from an earlier kill: its turn waits, the order stays
            await asyncio.sleep(0.2)
            continue
        pid = min(ready[role])  # the older worker: the kills alternate between the two
        os.kill(pid, signal.SIGKILL)
        report.kills.append(Kill(role, pid, time.monotonic(), frozenset(ready[role])))
        role = next(roles)
        await asyncio.sleep(interval)


async def _watch_recoveries(service: Service, report: ChaosReport, workers: int, load_ends: float,
                            until: float) -> None:
    """Note when each killed role has a new ready process, and when every process serves again after the latest
    kill; ends once the load is over and that has happened."""
    while time.monotonic() < until:
        ready = await asyncio.to_thread(_ready_pids, service)
        now = time.monotonic()
        for kill in report.kills:
            if kill.recovered_after is None and ready[kill.role] - kill.ready_before:
                kill.recovered_after = now - kill.at
        latest = report.kills[-1] if report.kills else None
        if latest is not None and latest.all_serving_after is None and latest.recovered_after is not None \
                and _all_serving(ready, workers):
            latest.all_serving_after = now - latest.at
        settled = latest is None or latest.all_serving_after is not None
        if now > load_ends and settled and all(kill.recovered_after is not None for kill in report.kills):
            return
        await asyncio.sleep(0.25)


def run_chaos(service: Service, seconds: float, interval: float, concurrency: int, workers: int) -> ChaosReport:
    """Load `service` for `seconds` while killing a process every `interval` s; then check the database."""
    report = ChaosReport()
    good_answers: list[float] = []
    texts = sentences(int(seconds * 400) + 1000, seed=29)

    async def scenario() -> None:
        stop_at = time.monotonic() + seconds
        await asyncio.gather(_load(service, texts, concurrency, stop_at, report, good_answers),
                             _kill_in_turn(service, seconds, interval, report),
                             _watch_recoveries(service, report, workers, stop_at, stop_at + 30))

    asyncio.run(scenario())
    if report.kills:
        last = report.kills[-1].at
        report.good_answer_after_last_kill = next((t - last for t in sorted(good_answers) if t > last), None)
        # A probe after the load, in case the last kill came as the load ended.
        if report.good_answer_after_last_kill is None:
            probe_deadline = time.monotonic() + 30
            while time.monotonic() < probe_deadline:
                try:
                    if httpx.post(f"{service.base_url}/get_embedding_vector/", json={"text": "chaos probe"},
                                  timeout=10).status_code == 200:
                        report.good_answer_after_last_kill = time.monotonic() - last
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
    report.missing = _missing(service, report.answered)
    return report


def _missing(service: Service, answered: set[str], wait_seconds: float = 20.0) -> int:
    """Answered texts not in the database once the writer has had time to commit (the gateway re-sends)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        with sqlite3.connect(service.data_dir / "llama_embeddings.sqlite") as connection:
            stored = {row[0] for row in connection.execute("SELECT text FROM embeddings")}
        missing = len(answered - stored)
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    from modelstore.catalogue import load_catalogue
    from modelstore.install import ensure_installed

    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    ensure_installed([MODEL], MODELS_DIR, load_catalogue(MODELS_DIR))
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    print(f"CPU: {cpu}, {os.cpu_count()} cores; {args.seconds:g} s of load at concurrency {args.concurrency}, "
          f"SIGKILL every {args.interval:g} s in turn: {', '.join(KILL_ORDER)}; {args.workers} {MODEL} workers")
    with tempfile.TemporaryDirectory() as data_dir, \
            running(Path(data_dir), MODELS_DIR, MODELS_TO_SERVE=MODEL, WORKERS_PER_MODEL=str(args.workers)) as service:
        report = run_chaos(service, args.seconds, args.interval, args.concurrency, args.workers)
        service.remember_pids()
    for line in report.lines():
        print(line)
    return 0 if report.missing == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
