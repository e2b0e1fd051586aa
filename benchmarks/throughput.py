"""Throughput side by side, in one run, on the same GGUF and the same texts (issue 7).

A  engine ceiling: llama-cpp-python in-process `Llama.embed`, best chunk size, threads = cores
B  llama-cpp-python's own server (`python -m llama_cpp.server --embedding true`), single texts, concurrency 64
C  sentence-transformers on CPU PyTorch, batch 32 (MiniLM only)
D  ours as configured by default, uncached single-text requests at concurrency 1, 8 and 64 (WORKERS_PER_MODEL
   auto: one-thread workers filling the cores, here 2 workers x 1 thread)
E  ours, the batch endpoint with 64 texts per request
F  ours, cached hits at concurrency 64
W  ours with 1 worker of 2 threads, uncached at concurrency 64 (the 2x1/1x2 ratio compares it with D@64)

B and C run in a separate environment (data/bench-venv: llama-cpp-python[server], torch==2.13.0 CPU,
sentence-transformers), made by `--setup`, so the service's own environment stays lean.

Usage: .venv/bin/python -m benchmarks.throughput [--quick] [--setup] [--no-peers] [--models all-minilm-l6-v2,...]
(--no-peers: A and ours only, without data/bench-venv; for comparing two commits of ours on one machine)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.corpus import sentences
from benchmarks.loadgen import LoadResult, http_request, run_load
from modelstore.catalogue import load_catalogue
from modelstore.install import ensure_installed, source_dir
from tests.harness import PROJECT_ROOT, Service, free_port

BENCH_VENV = PROJECT_ROOT / "data" / "bench-venv"
MINILM = "all-minilm-l6-v2"
CORES = os.cpu_count() or 1


@dataclass(frozen=True)
class Row:
    model: str
    case: str
    texts_per_second: float
    p50_ms: float
    p99_ms: float
    note: str = ""


def setup_bench_venv() -> None:
    """Create data/bench-venv with the peers (pip's cache makes the second run quick)."""
    if not (BENCH_VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
    pip = [str(BENCH_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)  # the CPU build this machine carries
    subprocess.run([*pip, "llama-cpp-python[server]==0.3.36", "sentence-transformers"], check=True)


# ---- A: the engine ceiling -------------------------------------------------------------------------------
def engine_ceiling(model_path: Path, pooling: int, n_ctx: int, texts: list[str],
                   chunks: tuple[int, ...] = (1, 8, 32)) -> Row:
    """The best of `chunks` texts per call, with and without flash attention (ours uses it where it pays)."""
    import llama_cpp

    best: tuple[float, str, list[float]] = (0.0, "", [])
    for flash in (False, True):
        llm = llama_cpp.Llama(model_path=str(model_path), embedding=True, n_threads=CORES, n_threads_batch=CORES,
                              n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, pooling_type=pooling, flash_attn=flash,
                              verbose=False)
        for chunk in chunks:
            llm.embed(texts[:chunk], normalize=True)  # warm up
            calls: list[float] = []
            started = time.perf_counter()
            for start in range(0, len(texts), chunk):
                t0 = time.perf_counter()
                llm.embed(texts[start:start + chunk], normalize=True)
                calls.append((time.perf_counter() - t0) * 1000)
            rate = len(texts) / (time.perf_counter() - started)
            if rate > best[0]:
                best = (rate, f"chunk {chunk}, flash attention {'on' if flash else 'off'}", calls)
        llm.close()
    rate, how, calls = best
    return Row("", "A engine ceiling", rate, float(np.percentile(calls, 50)), float(np.percentile(calls, 99)),
               f"{how}, {CORES} threads; latency per call")


# ---- B: llama-cpp-python's server --------------------------------------------------------------------------
def llama_server(model_path: Path, n_ctx: int, flash_attention: bool, texts: list[str]) -> Row:
    """Given the same threads and flash attention setting as ours, so only the serving differs."""
    port = free_port()
    command = [str(BENCH_VENV / "bin" / "python"), "-m", "llama_cpp.server", "--model", str(model_path),
               "--embedding", "true", "--n_threads", str(CORES), "--n_threads_batch", str(CORES),
               "--flash_attn", str(flash_attention).lower(),
               "--n_ctx", str(n_ctx), "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_http(port, "/v1/models", 120)
        requests = [http_request("127.0.0.1", port, "/v1/embeddings", json.dumps({"input": t}).encode())
                    for t in texts]
        result = asyncio.run(run_load("127.0.0.1", port, requests, 64))
    finally:
        server.terminate()
        server.wait(30)
    return _row("B llama_cpp.server c=64", result, 1)


# ---- C: sentence-transformers ------------------------------------------------------------------------------
_ST_SCRIPT = """
import json, sys, time
import numpy as np, torch
from sentence_transformers import SentenceTransformer
torch.set_num_threads(int(sys.argv[2]))
texts = json.load(open(sys.argv[3]))
model = SentenceTransformer(sys.argv[1], device="cpu")
model.encode(texts[:32], batch_size=32)
calls = []
started = time.perf_counter()
for i in range(0, len(texts), 32):
    t0 = time.perf_counter(); model.encode(texts[i:i+32], batch_size=32); calls.append((time.perf_counter()-t0)*1000)
rate = len(texts) / (time.perf_counter() - started)
print(json.dumps({"rate": rate, "p50": float(np.percentile(calls, 50)), "p99": float(np.percentile(calls, 99))}))
"""


def sentence_transformers(model_dir: Path, texts: list[str]) -> Row:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(texts, handle)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([str(BENCH_VENV / "bin" / "python"), "-c", _ST_SCRIPT, str(model_dir), str(CORES), handle.name],
                         capture_output=True, text=True, env=env, check=True)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    return Row("", "C sentence-transformers b=32", figures["rate"], figures["p50"], figures["p99"],
               "torch CPU; latency per batch")


# ---- D, E, F, W: ours --------------------------------------------------------------------------------------
def ours(model: str, models_dir: Path, texts: list[str], workers: str = "auto", full: bool = True) -> list[Row]:
    env = {"MODELS_TO_SERVE": model, "DEFAULT_MODEL_NAME": model, "WORKERS_PER_MODEL": workers,
           "LOG_LEVEL": "WARNING"}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as data_dir:
        service = Service(Path(data_dir), models_dir, env).start()
        try:
            port = service.port

            def single(batch: list[str]) -> list[bytes]:
                return [http_request("127.0.0.1", port, "/get_embedding_vector/", json.dumps({"text": t}).encode())
                        for t in batch]

            if not full:
                result = asyncio.run(run_load("127.0.0.1", port, single(texts), 64))
                return [_row(f"W ours {workers} worker(s) x {CORES // int(workers)} threads c=64", result, 1)]
            tenth, quarter = len(texts) // 10, len(texts) // 4
            slices = {1: texts[:tenth], 8: texts[tenth:tenth + quarter], 64: texts[tenth + quarter:]}
            for concurrency, batch in slices.items():
                result = asyncio.run(run_load("127.0.0.1", port, single(batch), concurrency))
                rows.append(_row(f"D ours uncached c={concurrency}", result, 1))
            fresh = [f"{t} (batch endpoint)" for t in texts]
            bodies = [http_request("127.0.0.1", port, "/get_embedding_vectors/",
                                   json.dumps({"texts": fresh[i:i + 64]}).encode()) for i in range(0, len(fresh), 64)]
            rows.append(_row("E ours batch endpoint 64/request c=4", asyncio.run(run_load("127.0.0.1", port, bodies, 4)), 64))
            cached = single(slices[64]) * max(1, 20_000 // max(1, len(slices[64])))
            rows.append(_row("F ours cached c=64", asyncio.run(run_load("127.0.0.1", port, cached, 64)), 1,
                             "requests/s"))
        finally:
            service.stop()
    return rows


def _row(case: str, result: LoadResult, texts_per_request: int, note: str = "") -> Row:
    if result.errors:
        note = f"{note} {result.errors} errors".strip()
    return Row("", case, result.per_second * texts_per_request, result.percentile(50), result.percentile(99), note)


def _wait_http(port: int, path: str, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"nothing answered on port {port} within {timeout}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer texts (240 and 48): under 3 minutes")
    parser.add_argument("--setup", action="store_true", help="create data/bench-venv with the peers first")
    parser.add_argument("--no-peers", action="store_true", help="skip B and C (no data/bench-venv needed)")
    parser.add_argument("--models", default="all-minilm-l6-v2,smollm2-135m-instruct")
    args = parser.parse_args()
    if args.setup or (not args.no_peers and not (BENCH_VENV / "bin" / "python").exists()):
        setup_bench_venv()
    models_dir = Path(os.environ.get("LES_TEST_MODELS_DIR", PROJECT_ROOT / "data" / "test-models"))
    catalogue = load_catalogue(models_dir)
    names = args.models.split(",")
    ensure_installed(names, models_dir, catalogue)
    import llama_cpp

    ratios: list[str] = []
    print(f"{'model':24} {'case':40} {'texts/s':>9} {'p50 ms':>9} {'p99 ms':>9}  note", flush=True)
    for name in names:
        # SmolLM2 costs ~13x more per token than MiniLM here (measured 83 tokens/s on one thread): fewer texts.
        if name == MINILM:
            count = 240 if args.quick else 3000
        else:
            count = 48 if args.quick else 300
        texts = sentences(count)
        entry = catalogue[name]
        path = entry.installed_path(models_dir)
        n_ctx = max(512, entry.max_tokens) if name == MINILM else 2048
        pooling = llama_cpp.LLAMA_POOLING_TYPE_MEAN
        # --quick spares SmolLM2 the 32-text chunks (tens of seconds; 8 was its best in every run so far).
        chunks = (1, 8) if args.quick and name != MINILM else (1, 8, 32)
        rows = {"A": engine_ceiling(path, pooling, n_ctx, texts, chunks)}
        print(f"{name}: A done", file=sys.stderr, flush=True)
        if not args.no_peers:
            rows["B"] = llama_server(path, n_ctx, entry.flash_attention, texts)
            print(f"{name}: B done", file=sys.stderr, flush=True)
        if name == MINILM and not args.no_peers:
            rows["C"] = sentence_transformers(source_dir(entry, models_dir), texts)
            print(f"{name}: C done", file=sys.stderr, flush=True)
        own = ours(name, models_dir, texts)
        own.append(ours(name, models_dir, texts[: len(texts) // 2], workers="1", full=False)[0])
        print(f"{name}: ours done", file=sys.stderr, flush=True)
        all_rows = [Row(name, r.case, r.texts_per_second, r.p50_ms, r.p99_ms, f"{r.note} ({count} texts)".strip())
                    for r in [*rows.values(), *own]]
        for row in all_rows:
            print(f"{row.model:24} {row.case:40} {row.texts_per_second:>9.1f} {row.p50_ms:>9.1f} {row.p99_ms:>9.1f}"
                  f"  {row.note}", flush=True)
        d64 = next(r for r in own if r.case == "D ours uncached c=64")
        f = next(r for r in own if r.case.startswith("F"))
        w = next(r for r in own if r.case.startswith("W"))
        ratio = f"{name}: D64/A={d64.texts_per_second / rows['A'].texts_per_second:.2f} "
        if "B" in rows:
            ratio += (f"D64/B={d64.texts_per_second / rows['B'].texts_per_second:.2f} "
                      f"p99 D64/B={d64.p99_ms / rows['B'].p99_ms:.2f} ")
        ratio += f"F={f.texts_per_second:.0f}/s 2x1/1x2={d64.texts_per_second / w.texts_per_second:.2f}"
        if "C" in rows:
            ratio += f" D64/C={d64.texts_per_second / rows['C'].texts_per_second:.2f}"
        ratios.append(ratio)
    print(f"\nmachine: {CORES} cores, {os.uname().machine}; texts: distinct sentences from benchmarks/corpus.py")
    print("targets: D64/A>=0.9, D64/B>=3, p99 D64/B<=0.5, F>=3000/s, 2x1/1x2>=0.95; stretch D64/C>=1.0")
    print("RATIOS " + " | ".join(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
