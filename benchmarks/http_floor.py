"""What uvicorn and Starlette alone cost per request here: the floor under the gateway's CPU per request (issue 17).

A Starlette app with one POST route that reads a JSON body and answers a fixed 384-d vector (orjson), run by
uvicorn as the gateway runs it (httptools, uvloop, no access log), loaded by wrk at concurrency 64 with the
same real sentences as the other cases. The cores are kept busy by one spinning process per core, as the
embedding workers keep them during the gateway's measurement (case D): the HTTP server then runs on a core it
shares, and its CPU per request is what the gateway's would be with no work of its own at all.

Run alone: `.venv/bin/python -m benchmarks.http_floor` (benchmarks/throughput.py runs it as case H).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from typing import Iterator

import psutil

from benchmarks.real_text import benchmark_sentences
from benchmarks.scaleout import cpu_seconds
from benchmarks.serving import wait_until_serving
from benchmarks.wrk import WrkResult, run_wrk
from tests.harness import free_port

CONNECTIONS = 64

_APP = """
import asyncio
import sys

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

DELAY = float(sys.argv[1])  # each answer waits this long, as for a worker: the request rate of the case compared
VECTOR = np.random.default_rng(0).standard_normal(384).astype(np.float32)


async def embed(request: Request) -> Response:
    body = orjson.loads(await request.body())
    await asyncio.sleep(DELAY)
    return Response(orjson.dumps({"embedding": VECTOR, "model": "m", "dimensions": 384, "cached": False,
                                  "chars": len(body["text"])}, option=orjson.OPT_SERIALIZE_NUMPY),
                    media_type="application/json")


async def health(request: Request) -> Response:
    return Response("ok")


app = Starlette(routes=[Route("/get_embedding_vector/", embed, methods=["POST"]), Route("/health", health)])
"""


@contextlib.contextmanager
def busy_cores() -> Iterator[None]:
    """One spinning process per core for the duration (what the embedding workers are during case D)."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


@contextlib.contextmanager
def floor_server(delay: float) -> Iterator[tuple[str, int]]:
    """The bare app under uvicorn on a free port, answering after `delay` seconds: (url, pid)."""
    port = free_port()
    command = [sys.executable, "-c", _APP + f"\nimport uvicorn\nuvicorn.run(app, host='127.0.0.1', port={port}, "
               "log_level='warning', access_log=False, timeout_graceful_shutdown=1)\n", str(delay)]
    server = subprocess.Popen(command)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(server, "the bare uvicorn app", url, "/health", 30)
        yield url, server.pid
    finally:
        # Answers held back longer than the shutdown grace (SmolLM2's rate: 64 / 5 per second, ~13 s) are cut off.
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def measure(texts: list[str], seconds: float, rate: float) -> tuple[WrkResult, float]:
    """wrk at concurrency 64 against the bare app on busy cores, each answer held back so that about `rate`
    requests/s are served (a gateway's CPU per request depends on the rate: at thousands a second every loop
    wake-up serves many): the result and the server's CPU ms per request."""
    with floor_server(CONNECTIONS / rate) as (url, pid), busy_cores():
        server = psutil.Process(pid)
        before = cpu_seconds([server])
        result = run_wrk(url, "/get_embedding_vector/", [{"text": text} for text in texts], connections=CONNECTIONS,
                         seconds=seconds, timeout=60, cycle=True)  # nothing is cached here
        return result, (cpu_seconds([server]) - before) * 1000 / max(1, result.requests)


def main() -> int:
    texts = benchmark_sentences(20_000)
    for rate in (100.0, 200.0, 100_000.0):
        result, cpu_ms = measure(texts, 10, rate)
        print(f"H uvicorn + Starlette alone, busy cores, c={CONNECTIONS}, held for {rate:g}/s: "
              f"{result.per_second:.0f} requests/s, {cpu_ms:.3f} ms CPU/request, {result.errors} errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
