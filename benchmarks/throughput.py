"""Throughput side by side, in one run, on the same GGUF and the same real sentences (issues 7 and 17).

A  engine ceiling: our Engine in-process, the best of a sweep over threads, tokens per call (texts per call),
   llama.cpp context size and flash attention
L  llama.cpp's native llama-server (benchmarks/llama_server.py), single texts, wrk at concurrency 64
D  ours as configured by default, uncached single texts, wrk at concurrency 64; the gateway's CPU per request and
   the writer's CPU per row, from each process's own CPU time
E  ours, the batch endpoint with 64 texts per request, 4 in flight, on a fresh service over A's own sentences
H  uvicorn + Starlette alone (benchmarks/http_floor.py) at D's request rate on busy cores: the part of D's gateway
   CPU per request that is the HTTP server's, which no change to the gateway's own code can remove
W  ours with 1 worker of 2 threads, uncached at concurrency 64 (full runs only)
B  llama-cpp-python's Python server and C  sentence-transformers (MiniLM), with --python-peers (data/bench-venv,
   made by `--setup`)

Every case gets the same real sentences of 5-60 words (benchmarks/real_text.py: Debian's Python and Perl docs),
each sent once, so "uncached" stays uncached. E gets A's sentences, on a service of its own, so that it is
divided by a ceiling measured on the same sentences and has no other case's requests ahead of it. The CPU model
and flags go first. A full run measures A (its best configuration again), L and D in three rounds, in turn, and
reports each one's median and every round's ratios (`--rounds N`; `--quick`: one round). Beside each RATIOS
line a BOUNDS line gives what caps those ratios on this machine, from the same round's figures
(benchmarks/tail_bound.py): engine-best / llama-server caps ours / llama-server, and the tail of arrival order
over these sentences with the engine's rate caps p99 ours / llama-server.

Usage: .venv/bin/python -m benchmarks.throughput [--quick] [--rounds N] [--python-peers] [--setup] [--models a,b]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import psutil

from benchmarks import http_floor
from benchmarks.llama_server import serve
from benchmarks.loadgen import LoadResult, http_request, run_load
from benchmarks.real_text import benchmark_sentences
from benchmarks.scaleout import cpu_seconds, role_processes
from benchmarks.serving import wait_until_serving
from benchmarks.tail_bound import bounds
from benchmarks.wrk import WrkResult, run_wrk
from modelstore.catalogue import ModelEntry, load_catalogue
from modelstore.install import ensure_installed, source_dir
from tests.harness import PROJECT_ROOT, Service, free_port, running
from workers.embedder.batcher import Item, TextQueue
from workers.embedder.engine import Engine, EngineConfig

BENCH_VENV = PROJECT_ROOT / "data" / "bench-venv"
MINILM = "all-minilm-l6-v2"
SMOLLM2 = "smollm2-135m-instruct"
CORES = os.cpu_count() or 1
# SmolLM2's Q4_1 repacked for AMX segfaults in llama.cpp (ggml-org/llama.cpp#20824): off, as our canary chooses.
REPACK = {MINILM: True, SMOLLM2: False}
HTTP_FLOOR_CASE = "H uvicorn + Starlette alone at D's rate"
QUICK_FLOOR_SECONDS = 12.0


@dataclass(frozen=True)
class Row:
    case: str
    texts_per_second: float
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    note: str = ""


@dataclass(frozen=True)
class EngineCase:
    threads: int
    token_budget: int
    context_tokens: int  # 0: sized for one call
    flash_attention: bool

    def describe(self) -> str:
        context = f"n_ctx {self.context_tokens}" if self.context_tokens else "n_ctx = call"
        engines = f"{CORES} engines x " if self.threads == 1 and CORES > 1 else ""
        return (f"{engines}{self.threads} thr, {self.token_budget} tokens/call, {context}, "
                f"fa {'on' if self.flash_attention else 'off'}")


def cpu_line() -> str:
    """The CPU model and its SIMD flags: what decides which llama.cpp kernels run."""
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    simd = sorted(flag for flag in flags if flag.startswith(("avx", "amx", "fma", "f16c")))
    return f"CPU: {model}, {CORES} cores; flags {' '.join(simd)}"


# ---- A: the engine ceiling -------------------------------------------------------------------------------
def engine_case(entry: ModelEntry, path: Path, case: EngineCase, texts: list[str], seconds: float | None = None,
                start: Any = None) -> tuple[float, float]:
    """Texts/s through our Engine, grouped by the worker's own batcher, and the mean texts per call. `seconds`:
    stop after the call that passes it (the texts go in order, so a slower case embeds a shorter prefix of the
    same sentences). `start`: a barrier that engines measured side by side wait at once loaded, so that their
    timed spans overlap."""
    engine = Engine(EngineConfig(str(path), entry.pooling, entry.max_tokens, case.threads, case.token_budget,
                                 case.flash_attention, weight_repack=REPACK.get(entry.name, True),
                                 context_tokens=case.context_tokens))
    try:
        tokens = [engine.tokenize(text) for text in texts]
        queue = TextQueue(case.token_budget, engine.max_sequences)
        queue.extend(Item((0, index), 0, ids) for index, ids in enumerate(tokens))
        live = {(0, index) for index in range(len(texts))}
        engine.embed(tokens[:4])  # warm up
        if start is not None:
            start.wait()
        calls = done = 0
        started = time.perf_counter()
        deadline = started + seconds if seconds is not None else float("inf")
        while queue and time.perf_counter() < deadline:
            group = queue.next_group(live)
            engine.embed([item.tokens for item in group])
            calls, done = calls + 1, done + len(group)
        return done / (time.perf_counter() - started), done / calls
    finally:
        engine.close()


def one_thread_engines(entry: ModelEntry, path: Path, case: EngineCase, texts: list[str],
                       seconds: float | None) -> tuple[float, float]:
    """One one-thread engine per core at once, each in its own process on its share of the texts (what our
    default workers are), started together once all are loaded: the sum of their rates."""
    shares = [texts[i::CORES] for i in range(CORES)]
    spawn = multiprocessing.get_context("spawn")
    with spawn.Manager() as manager, ProcessPoolExecutor(CORES, mp_context=spawn) as pool:
        start = manager.Barrier(CORES)
        results = list(pool.map(engine_case, [entry] * CORES, [path] * CORES, [case] * CORES, shares,
                                [seconds] * CORES, [start] * CORES))
    return sum(rate for rate, _ in results), sum(per_call for _, per_call in results) / CORES


def measure_engine(entry: ModelEntry, path: Path, case: EngineCase, texts: list[str],
                   seconds: float | None) -> tuple[float, float]:
    """Texts/s and texts per call of one configuration (one-thread engines: one per core, side by side)."""
    if case.threads == 1 and CORES > 1:
        return one_thread_engines(entry, path, case, texts, seconds)
    return engine_case(entry, path, case, texts, seconds)


def engine_ceiling(entry: ModelEntry, path: Path, texts: list[str], quick: bool,
                   seconds: float | None) -> tuple[Row, list[str], EngineCase]:
    """The best configuration of a sweep: one engine on every core (as llama-server runs) over tokens per call,
    context and flash attention, and one-thread engines on every core at the catalogue's settings."""
    budgets = (128, 512) if quick else (128, 512, 1024)
    contexts = (0,) if quick else (0, 4096)
    cases = [EngineCase(CORES, budget, context, flash)
             for budget, context, flash in itertools.product(budgets, contexts, (False, True))]
    cases.append(EngineCase(1, entry.batch_tokens, 0, entry.flash_attention))
    lines: list[str] = []
    best, best_case = Row("A engine best", 0.0), cases[0]
    for case in cases:
        rate, per_call = measure_engine(entry, path, case, texts, seconds)
        lines.append(f"    A sweep {case.describe():52} {rate:8.1f} texts/s ({per_call:.0f} texts/call)")
        print(lines[-1], file=sys.stderr, flush=True)
        if rate > best.texts_per_second:
            best, best_case = Row("A engine best", rate, note=f"{case.describe()}, {per_call:.0f} texts/call"), case
    return best, lines, best_case


# ---- L: llama-server ----------------------------------------------------------------------------------------
def native_server(entry: ModelEntry, path: Path, texts: list[str], seconds: float) -> Row:
    with serve(path, weight_repack=REPACK.get(entry.name, True)) as (url, pid):
        server = psutil.Process(pid)
        before = cpu_seconds([server])
        result = run_wrk(url, "/v1/embeddings", [{"input": t} for t in texts], connections=64, seconds=seconds,
                         timeout=60)
        cpu_ms = (cpu_seconds([server]) - before) * 1000 / max(1, result.requests)
    return _wrk_row("L llama-server native c=64", result, f"{cpu_ms:.1f} ms CPU/text")


# ---- D, E, W: ours -----------------------------------------------------------------------------------------
@contextlib.contextmanager
def fresh_service(model: str, models_dir: Path, workers: str = "auto") -> Iterator[Service]:
    """Ours serving `model` alone from an empty store (nothing it is sent is cached), stopped afterwards."""
    with tempfile.TemporaryDirectory() as data_dir, \
            running(Path(data_dir), models_dir, MODELS_TO_SERVE=model, DEFAULT_MODEL_NAME=model,
                    WORKERS_PER_MODEL=workers, LOG_LEVEL="WARNING") as service:
        yield service


def batch_endpoint(model: str, models_dir: Path, texts: list[str]) -> Row:
    """E: `texts` in requests of 64, 4 in flight, on a service of its own (no other case's requests ahead)."""
    with fresh_service(model, models_dir) as service:
        bodies = [http_request("127.0.0.1", service.port, "/get_embedding_vectors/",
                               json.dumps({"texts": texts[i:i + 64]}).encode()) for i in range(0, len(texts), 64)]
        load = asyncio.run(run_load("127.0.0.1", service.port, bodies, 4))
    return _load_row("E ours batch endpoint 64/request c=4", load, 64)


def ours(model: str, models_dir: Path, texts: list[str], seconds: float, workers: str = "auto") -> Row:
    """D (or W, with `workers`): single uncached texts by wrk, with the gateway's and the writer's CPU."""
    with fresh_service(model, models_dir, workers) as service:
        gateway, writer = role_processes(service, "gateway"), role_processes(service, "writer")
        gateway_before, writer_before, started = cpu_seconds(gateway), cpu_seconds(writer), time.monotonic()
        result = run_wrk(service.base_url, "/get_embedding_vector/", [{"text": t} for t in texts],
                         connections=64, seconds=seconds, timeout=60)
        gateway_cpu = cpu_seconds(gateway) - gateway_before
        time.sleep(1.0)  # the last rows' commit and index update
        writer_cpu = cpu_seconds(writer) - writer_before
        # The share of the cores tells what the two took from the engine: at SmolLM2's few requests a second
        # their CPU per request is mostly what they spend idle (heartbeats, polls), not what a request costs.
        share = (gateway_cpu + writer_cpu) / ((time.monotonic() - started) * CORES)
        label = "D ours uncached c=64" if workers == "auto" else f"W ours {workers} worker x {CORES} thr c=64"
    per_request = 1000 / max(1, result.requests)
    return _wrk_row(label, result, f"gateway {gateway_cpu * per_request:.2f} ms CPU/request, writer "
                                   f"{writer_cpu * per_request:.2f} ms CPU/row, together {share:.1%} of the cores")


def http_server_floor(texts: list[str], rate: float, quick: bool) -> Row:
    """H: the bare HTTP server's CPU per request at `rate` (D's), concurrency 64, on busy cores."""
    # Each connection answered a few times, not once (--quick: about once, and not at all where that alone would
    # take --quick past its 3 minutes: SmolLM2's 3 requests/s on a slow machine hold each answer 20 s).
    answers, shortest = (1, 6.0) if quick else (3, 8.0)
    seconds = max(shortest, answers * http_floor.CONNECTIONS / rate + 2)
    if quick and seconds > QUICK_FLOOR_SECONDS:
        return Row(HTTP_FLOOR_CASE, float("nan"), note=f"not in --quick: one answer per connection takes {seconds:.0f} s")
    result, cpu_ms = http_floor.measure(texts, seconds, rate)
    return _wrk_row(HTTP_FLOOR_CASE, result, f"{cpu_ms:.2f} ms CPU/request")


def _wrk_row(case: str, result: WrkResult, note: str = "") -> Row:
    if result.errors:
        note = f"{note}; {result.errors} errors".strip("; ")
    return Row(case, result.per_second, result.p50_ms, result.p99_ms, f"{note}; {result.requests} texts".strip("; "))


def _load_row(case: str, result: LoadResult, texts_per_request: int, note: str = "") -> Row:
    if result.errors:
        note = f"{note} {result.errors} errors".strip()
    return Row(case, result.per_second * texts_per_request, result.percentile(50), result.percentile(99),
               f"{note} {result.requests * texts_per_request} texts; latency per request".strip())


# ---- B, C: the Python peers (--python-peers) ---------------------------------------------------------------
def setup_bench_venv() -> None:
    """Create data/bench-venv with the peers (pip's cache makes the second run quick)."""
    if not (BENCH_VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
    pip = [str(BENCH_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)  # the CPU build this machine carries
    subprocess.run([*pip, "llama-cpp-python[server]==0.3.36", "sentence-transformers"], check=True)


def python_server(path: Path, flash_attention: bool, texts: list[str], seconds: float) -> Row:
    port = free_port()
    command = [str(BENCH_VENV / "bin" / "python"), "-m", "llama_cpp.server", "--model", str(path),
               "--embedding", "true", "--n_threads", str(CORES), "--n_threads_batch", str(CORES),
               "--flash_attn", str(flash_attention).lower(), "--n_ctx", "2048", "--host", "127.0.0.1",
               "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_serving(server, "llama_cpp.server", f"http://127.0.0.1:{port}", "/v1/models", 120)
        result = run_wrk(f"http://127.0.0.1:{port}", "/v1/embeddings", [{"input": t} for t in texts],
                         connections=64, seconds=seconds, timeout=60)
    finally:
        server.terminate()
        server.wait(30)
    return _wrk_row("B llama_cpp.server c=64", result)


_ST_SCRIPT = """
import json, sys, time
import torch
from sentence_transformers import SentenceTransformer
torch.set_num_threads(int(sys.argv[2]))
texts = json.load(open(sys.argv[3]))
model = SentenceTransformer(sys.argv[1], device="cpu")
model.encode(texts[:32], batch_size=32)
started = time.perf_counter()
model.encode(texts, batch_size=32)
print(json.dumps({"rate": len(texts) / (time.perf_counter() - started)}))
"""


def sentence_transformers(model_dir: Path, texts: list[str]) -> Row:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(texts, handle)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([str(BENCH_VENV / "bin" / "python"), "-c", _ST_SCRIPT, str(model_dir), str(CORES),
                          handle.name], capture_output=True, text=True, env=env, check=True)
    return Row("C sentence-transformers b=32", json.loads(out.stdout.strip().splitlines()[-1])["rate"],
               note="torch CPU float32")


# ---- the run -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """How much of each model's work a run does: texts for A (and E: whole requests of 64), seconds of wrk."""

    engine_texts: int
    wrk_seconds: float
    wrk_texts: int  # more than a server can answer in wrk_seconds, so that no body is sent twice
    # --quick: each A case stops after this long, so that its 3 minutes hold on a slower machine too (one ran
    # 3x slower per text than another, and --quick took 5.7 minutes on it with whole text counts)
    engine_seconds: float | None = None


def plan(name: str, quick: bool) -> Plan:
    # SmolLM2 costs ~15x more per text than MiniLM here (~12 vs ~200 texts/s on 2 cores).
    if name == SMOLLM2:
        return Plan(64, 10, 600, engine_seconds=5) if quick else Plan(256, 40, 1500)
    return Plan(256, 6, 4000, engine_seconds=3) if quick else Plan(1024, 25, 12_000)


def run_model(name: str, models_dir: Path, args: argparse.Namespace) -> tuple[list[Row], list[str], list[str]]:
    catalogue = load_catalogue(models_dir)
    entry = catalogue[name]
    path = entry.installed_path(models_dir)
    p = plan(name, args.quick)
    wrk_texts = benchmark_sentences(p.wrk_texts)
    engine_texts = wrk_texts[:p.engine_texts]  # A's sentences, and E's
    ceiling, sweep, best_case = engine_ceiling(entry, path, engine_texts, args.quick, p.engine_seconds)
    rows = [ceiling, native_server(entry, path, wrk_texts, p.wrk_seconds)]
    print(f"{name}: A, L done", file=sys.stderr, flush=True)
    if args.python_peers:
        rows.append(python_server(path, entry.flash_attention, wrk_texts, p.wrk_seconds))
        if name == MINILM:
            rows.append(sentence_transformers(source_dir(entry, models_dir), engine_texts))
    rows.append(ours(name, models_dir, wrk_texts, p.wrk_seconds))
    rows += [http_server_floor(wrk_texts, rows[-1].texts_per_second, args.quick),
             batch_endpoint(name, models_dir, engine_texts)]
    if not args.quick:
        rows.append(ours(name, models_dir, wrk_texts, p.wrk_seconds, workers="1"))
    by_case = {row.case[0]: row for row in rows}
    rounds = [(by_case["A"], by_case["L"], by_case["D"])]
    # One run of a case moved its ratio by up to 15% here: A, L and D again, in turn, and their medians used.
    for number in range(2, args.rounds + 1):
        rate, per_call = measure_engine(entry, path, best_case, engine_texts, p.engine_seconds)
        rounds.append((Row("A engine best", rate, note=f"{best_case.describe()}, {per_call:.0f} texts/call"),
                       native_server(entry, path, wrk_texts, p.wrk_seconds),
                       ours(name, models_dir, wrk_texts, p.wrk_seconds)))
        print(f"{name}: round {number} done", file=sys.stderr, flush=True)
    print(f"{name}: ours done", file=sys.stderr, flush=True)
    a, native, d = (_median_row(list(case)) for case in zip(*rounds))
    rows = [a, native, *(row for row in rows if row.case[0] not in "ALD"), d]
    rows.sort(key=lambda row: "ALBCDHEW".index(row.case[0]))
    e = by_case["E"]
    ratios = [line for i, round_rows in enumerate(rounds, 1)
              for line in _ratios(f"{name}{f' round {i}' if len(rounds) > 1 else ''}", *round_rows, e, wrk_texts)]
    if len(rounds) > 1:
        ratios += _ratios(f"{name} median of {len(rounds)} rounds", a, native, d, e, wrk_texts)
    return rows, sweep, ratios


def _ratios(label: str, a: Row, native: Row, d: Row, e: Row, texts: list[str]) -> list[str]:
    """The RATIOS line of the goals and the BOUNDS line of what caps them on this machine (tail_bound.py)."""
    limits = bounds(a.texts_per_second, native.texts_per_second, native.p99_ms, d.texts_per_second, d.p99_ms, texts)
    return [f"RATIOS {label}: ours/engine-best={d.texts_per_second / a.texts_per_second:.2f} "
            f"ours/llama-server={d.texts_per_second / native.texts_per_second:.2f} "
            f"p99 ours/llama-server={d.p99_ms / native.p99_ms:.2f} "
            f"batch/engine-best={e.texts_per_second / a.texts_per_second:.2f}",
            f"BOUNDS {label}: {limits.describe()}"]


def _median_row(rows: list[Row]) -> Row:
    """One case measured in several rounds: the median of each figure, every round's texts/s in the note."""
    if len(rows) == 1:
        return rows[0]
    middle = sorted(rows, key=lambda row: row.texts_per_second)[len(rows) // 2]
    rates = " / ".join(f"{row.texts_per_second:.1f}" for row in rows)
    return Row(f"{rows[0].case} (median of {len(rows)})", statistics.median(r.texts_per_second for r in rows),
               statistics.median(r.p50_ms for r in rows), statistics.median(r.p99_ms for r in rows),
               f"rounds {rates}; {middle.note}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer texts, shorter runs, smaller sweep: < 3 minutes")
    parser.add_argument("--python-peers", action="store_true", help="add B and C (data/bench-venv)")
    parser.add_argument("--setup", action="store_true", help="create data/bench-venv with the Python peers first")
    parser.add_argument("--models", default=f"{MINILM},{SMOLLM2}")
    parser.add_argument("--rounds", type=int, default=None,
                        help="A (its best configuration), L and D this many times in turn, medians reported "
                             "(default 3, --quick 1)")
    args = parser.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    print(cpu_line(), flush=True)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    if args.setup or (args.python_peers and not (BENCH_VENV / "bin" / "python").exists()):
        setup_bench_venv()
    models_dir = Path(os.environ.get("LES_TEST_MODELS_DIR", PROJECT_ROOT / "data" / "test-models"))
    names = args.models.split(",")
    ensure_installed(names, models_dir, load_catalogue(models_dir))
    ratios: list[str] = []
    for name in names:
        rows, sweep, model_ratios = run_model(name, models_dir, args)
        print(f"\n{name}\n" + "\n".join(sweep))
        print(f"  {'case':40} {'texts/s':>9} {'p50 ms':>9} {'p99 ms':>9}  note")
        for row in rows:
            print(f"  {row.case:40} {row.texts_per_second:>9.1f} {row.p50_ms:>9.1f} {row.p99_ms:>9.1f}  {row.note}",
                  flush=True)
        ratios += model_ratios
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("targets: ours/engine-best>=0.95, ours/llama-server>=1.10, p99 ours/llama-server<=0.9, "
          "batch/engine-best>=0.97, gateway<=0.6 ms CPU/request, writer<=0.2 ms CPU/row")
    print("\n".join(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
