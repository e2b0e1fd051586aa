"""A small HTTP/1.1 load generator: N keep-alive connections, each sending the next request body in turn.

Written for this machine's 2 cores: a client built on httpx spends about a millisecond of CPU per request,
which the server under test would lose; raw asyncio streams with precomputed requests cost a few tens of
microseconds. Every body is sent exactly once, so "uncached" runs stay uncached.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    latencies_ms: np.ndarray
    errors: int

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if len(self.latencies_ms) else float("nan")


def http_request(host: str, port: int, path: str, body: bytes) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n")
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    length = 0
    chunked = False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        lowered = name.strip().lower()
        if lowered == b"content-length":
            length = int(value)
        elif lowered == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readline()).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def run_load(host: str, port: int, requests: list[bytes], concurrency: int) -> LoadResult:
    """Send every request once over `concurrency` connections; return throughput and latencies."""
    pending: Iterator[bytes] = iter(requests)
    latencies: list[float] = []
    errors = 0

    async def connection() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for request in pending:
                started = time.perf_counter()
                writer.write(request)
                status = await _read_response(reader)
                latencies.append((time.perf_counter() - started) * 1000)
                if status != 200:
                    errors += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return LoadResult(len(latencies), elapsed, np.array(latencies), errors)
