"""Scale-out figures, in one run (issue 14): gateway CPU per request, one against two gateway processes, SQLite
against PostgreSQL, and a capacity model from the measured costs.

  G   gateway CPU per cached and per uncached request (ms of the gateway processes' own CPU time / requests)
  C1  cached requests/s at concurrency 64, GATEWAY_PROCESSES=1 (wrk)
  C2  the same with GATEWAY_PROCESSES=2                          goal: C2 >= 1.3 x C1 on a 2-core machine
  US  uncached texts/s at concurrency 64, SQLite
  U2  the same with 2 gateway processes (what GATEWAY_PROCESSES=auto chooses on 2 cores rests on C2 and U2)
  UP  the same with PostgreSQL (a throw-away cluster here), in turns with a second SQLite instance: the ratio
      is of the means of two alternating runs each              goal: UP >= 0.95 x US

Every uncached text is sent once (distinct sentences from benchmarks/corpus.py); cached runs go round 200 texts
embedded first. Usage: .venv/bin/python -m benchmarks.scaleout [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

from benchmarks.corpus import sentences
from benchmarks.wrk import WrkResult, run_wrk
from tests.harness import PROJECT_ROOT, Service, running
from tests.postgres import PostgresCluster, server_binaries

MINILM = "all-minilm-l6-v2"
CORES = os.cpu_count() or 1


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """User + system CPU these processes have used so far (those gone since are left out)."""
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def role_processes(service: Service, role: str) -> list[psutil.Process]:
    """The instance's processes of `role`, from its status."""
    return [psutil.Process(row["pid"]) for row in service.status()["processes"] if row["role"] == role]


def gateway_cpu_seconds(service: Service) -> float:
    """CPU the instance's gateway processes have used so far."""
    return cpu_seconds(role_processes(service, "gateway"))


@contextmanager
def instance(root: Path, models_dir: Path, **env: str) -> Iterator[Service]:
    with running(root, models_dir, MODELS_TO_SERVE=MINILM, WORKERS_PER_MODEL="auto", **env) as service:
        yield service


def cached_run(service: Service, seconds: float) -> tuple[WrkResult, float]:
    """Cached hits at concurrency 64, and the gateway CPU (ms) per request."""
    texts = [f"a cached text for the scale-out benchmark, number {i}" for i in range(200)]
    with httpx.Client(base_url=service.base_url, timeout=60) as client:
        for start in range(0, len(texts), 50):
            assert client.post("/get_embedding_vectors/", json={"texts": texts[start:start + 50]}).status_code == 200
    before = gateway_cpu_seconds(service)
    result = run_wrk(service.base_url, "/get_embedding_vector/", [{"text": t} for t in texts], connections=64,
                     seconds=seconds, cycle=True)
    return result, (gateway_cpu_seconds(service) - before) * 1000 / max(1, result.requests)


def uncached_run(service: Service, texts: list[str], seconds: float) -> tuple[WrkResult, float, float]:
    """Distinct texts at concurrency 64; the gateway CPU (ms) per text, and the writer's once it has them all."""
    before, writer_before = gateway_cpu_seconds(service), writer_cpu_seconds(service)
    result = run_wrk(service.base_url, "/get_embedding_vector/", [{"text": t} for t in texts], connections=64,
                     seconds=seconds)
    gateway_ms = (gateway_cpu_seconds(service) - before) * 1000 / max(1, result.requests)
    time.sleep(1.0)  # the last rows' commit and index update
    writer_ms = (writer_cpu_seconds(service) - writer_before) * 1000 / max(1, result.requests)
    return result, gateway_ms, writer_ms


def row(case: str, result: WrkResult, note: str = "") -> str:
    return (f"{case:44} {result.per_second:>10.1f} {result.p50_ms:>8.1f} {result.p99_ms:>8.1f} "
            f"{result.errors:>6}  {note}")


def capacity_model(gateway_ms_uncached: float, texts_per_core: float, writer_ms_per_row: float) -> list[str]:
    """Texts/s a host or a set of hosts could serve, from the measured costs per text (one writer per instance)."""
    lines = []
    writer = 1000 / writer_ms_per_row if writer_ms_per_row else float("inf")
    for label, worker_cores, gateway_cores in (("one 64-core host, 8 gateway processes, 1 writer", 64 - 8 - 1, 8),
                                               ("a 64-core gateway+writer host and 3 worker hosts", 3 * 64, 32)):
        workers = worker_cores * texts_per_core
        gateways = gateway_cores * 1000 / gateway_ms_uncached
        bound = min(workers, gateways, writer)
        limit = "workers" if bound == workers else "gateways" if bound == gateways else "the writer"
        lines.append(f"  {label:50} workers {workers:>8,.0f}/s  gateways {gateways:>8,.0f}/s  "
                     f"writer {writer:>7,.0f}/s  -> {bound:,.0f} texts/s, bound by {limit}")
    lines.append(f"  one writer takes {writer:,.0f} rows/s: past {writer / texts_per_core:,.0f} worker cores more "
                 "worker hosts add nothing until writes are split over several writers")
    return lines


def postgres_cpu_seconds() -> float:
    """CPU of every PostgreSQL server process on this machine so far (they share our cores here)."""
    return cpu_seconds([p for p in psutil.process_iter(["name"]) if p.info["name"] == "postgres"])


def writer_cpu_seconds(service: Service) -> float:
    """CPU of the writer process (inserts and the search index) so far."""
    return cpu_seconds(role_processes(service, "writer"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    models_dir = Path(os.environ.get("LES_TEST_MODELS_DIR", PROJECT_ROOT / "data" / "test-models"))
    share = int(args.seconds * 300) + 500  # distinct texts per uncached run: more than it can embed
    texts = sentences(7 * share)
    print(f"{'case':44} {'per s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}  note", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        with instance(root / "one", models_dir) as one:
            c1, cached_ms = cached_run(one, args.seconds)
            print(row("C1 cached c=64, 1 gateway process", c1, f"{cached_ms:.3f} ms gateway CPU/request"), flush=True)
            us, uncached_ms, writer_ms = uncached_run(one, texts[:share], args.seconds)
            print(row("US uncached c=64, SQLite", us, f"{uncached_ms:.3f} ms gateway, {writer_ms:.3f} ms writer CPU/text"),
                  flush=True)
            texts_per_core = us.per_second / CORES
        with instance(root / "two", models_dir, GATEWAY_PROCESSES="2") as two:
            c2, cached_ms_two = cached_run(two, args.seconds)
            print(row("C2 cached c=64, 2 gateway processes", c2, f"{cached_ms_two:.3f} ms gateway CPU/request"),
                  flush=True)
            u2, _, _ = uncached_run(two, texts[share:2 * share], args.seconds)
            print(row("U2 uncached c=64, 2 gateway processes", u2), flush=True)
        binaries = server_binaries()
        if binaries is None:
            print("UP skipped: no PostgreSQL server binaries (apt-get install postgresql)", file=sys.stderr)
            up_ratio = None
        else:
            cluster = PostgresCluster(binaries).start()
            try:
                # Both stores side by side, measured in turn twice: one pair of runs moved by 10-20% on this
                # machine from run to run, so the ratio is of the means of alternating runs.
                with instance(root / "pg", models_dir, DATABASE_URL=cluster.database()) as pg, \
                        instance(root / "sqlite", models_dir) as sqlite:
                    sqlite_rates, pg_rates = [], []
                    for turn in range(2):
                        chunk = texts[(3 + 2 * turn) * share:(4 + 2 * turn) * share]
                        again, _, _ = uncached_run(sqlite, chunk, args.seconds)
                        sqlite_rates.append(again.per_second)
                        print(row(f"US uncached c=64, SQLite (turn {turn + 1})", again), flush=True)
                        server_before = postgres_cpu_seconds()
                        up, gateway_pg_ms, writer_pg_ms = uncached_run(
                            pg, texts[(4 + 2 * turn) * share:(5 + 2 * turn) * share], args.seconds)
                        pg_rates.append(up.per_second)
                        server_ms = (postgres_cpu_seconds() - server_before) * 1000 / max(1, up.requests)
                        print(row(f"UP uncached c=64, PostgreSQL (turn {turn + 1})", up,
                                  f"{gateway_pg_ms:.3f} ms gateway, {writer_pg_ms:.3f} ms writer, {server_ms:.3f} ms "
                                  "PostgreSQL server CPU/text (on the same cores here)"), flush=True)
                    up_ratio = sum(pg_rates) / sum(sqlite_rates)
            finally:
                cluster.close()
    print(f"\nmachine: {CORES} cores; G: {cached_ms:.3f} ms per cached request, {uncached_ms:.3f} ms per uncached text "
          f"(gateway CPU); writer {writer_ms:.3f} ms CPU per row")
    ratios = f"C2/C1={c2.per_second / c1.per_second:.2f} (goal >= 1.3) U2/US={u2.per_second / us.per_second:.2f}"
    if up_ratio is not None:
        ratios += f" UP/US={up_ratio:.2f} (goal >= 0.95; means of the alternating turns)"
    print("RATIOS " + ratios)
    print(f"capacity model (MiniLM, {texts_per_core:.0f} texts/s per worker core as measured here):")
    print("\n".join(capacity_model(uncached_ms, texts_per_core, writer_ms)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
