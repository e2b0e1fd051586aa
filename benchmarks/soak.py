"""Soak: mixed load for a while, then the RSS of every process at start and end, and the error count.

The database grows during a soak (new texts are embedded all along), and so, by design, do the search
index the writer holds and the gateway maps: 4 bytes per dimension per new row. Growth is therefore also
shown beyond that index share; the gateway's LRU is kept small so that it is full before the baseline.

Usage: .venv/bin/python -m benchmarks.soak [--minutes 10] [--concurrency 8]
Targets (issue 6): RSS growth under 10% for every process (beyond the index share), 0 errors.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable
from pathlib import Path

import httpx
import psutil

from benchmarks.corpus import sentences
from tests.harness import PROJECT_ROOT, Service

MODELS_DIR = PROJECT_ROOT / "data" / "test-models"
DIMENSIONS = 384
INDEX_HOLDERS = ("gateway", "writer")


def _stored_rows(service: Service) -> int:
    with sqlite3.connect(service.data_dir / "llama_embeddings.sqlite") as connection:
        return int(connection.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])


def _rss(service: Service) -> dict[str, int]:
    status = service.status()
    rows = {f"{row['role']} {row['model']}#{row['worker_id']}".strip(): row["pid"] for row in status["processes"]}
    rows["supervisor"] = status["pid"]
    return {name: psutil.Process(pid).memory_info().rss for name, pid in rows.items()}


async def _load(service: Service, seconds: float, concurrency: int) -> Counter[str]:
    texts = sentences(200_000, seed=11)
    fresh = iter(texts)
    repeated = texts[:500]
    outcomes: Counter[str] = Counter()
    rng = random.Random(5)
    document = " ".join(texts[:40]).encode()
    deadline = time.monotonic() + seconds

    def request(client: httpx.AsyncClient) -> Awaitable[httpx.Response]:
        kind = rng.choices(["new", "cached", "batch", "similarity", "search", "openai", "document"],
                           weights=[30, 30, 10, 10, 10, 8, 2])[0]
        if kind == "new":
            return client.post("/get_embedding_vector/", json={"text": next(fresh)})
        if kind == "cached":
            return client.post("/get_embedding_vector/", json={"text": rng.choice(repeated)})
        if kind == "batch":
            return client.post("/get_embedding_vectors/", json={"texts": list(itertools.islice(fresh, 16))})
        if kind == "similarity":
            return client.post("/compute_similarity_between_strings/",
                               json={"text1": rng.choice(repeated), "text2": rng.choice(repeated)})
        if kind == "search":
            return client.post("/get_most_similar_string_from_database/",
                               json={"text": rng.choice(repeated), "number_of_most_similar_strings_to_return": 5})
        if kind == "openai":
            return client.post("/v1/embeddings", json={"input": [next(fresh), rng.choice(repeated)],
                                                       "model": "all-minilm-l6-v2"})
        return client.post("/get_all_embeddings_for_document/", files={"file": ("soak.txt", document, "text/plain")})

    async def user(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            try:
                response = await request(client)
                outcomes[str(response.status_code)] += 1
            except httpx.HTTPError as exc:
                outcomes[type(exc).__name__] += 1

    async with httpx.AsyncClient(base_url=service.base_url, timeout=120) as client:
        await asyncio.gather(*(user(client) for _ in range(concurrency)))
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        service = Service(Path(data_dir), MODELS_DIR, {"MODELS_TO_SERVE": "all-minilm-l6-v2", "LOG_LEVEL": "WARNING",
                                                       "GATEWAY_CACHE_ENTRIES": "2000"})
        service.start()
        try:
            asyncio.run(_load(service, 30, args.concurrency))  # warm up caches and indexes before the baseline
            start, rows_before = _rss(service), _stored_rows(service)
            outcomes = asyncio.run(_load(service, args.minutes * 60, args.concurrency))
            time.sleep(2)  # let the last rows commit
            end, rows_after = _rss(service), _stored_rows(service)
        finally:
            service.stop()
    errors = sum(count for outcome, count in outcomes.items() if outcome != "200")
    index_bytes = (rows_after - rows_before) * DIMENSIONS * 4
    print(f"{'process':32} {'RSS start MB':>12} {'RSS end MB':>11} {'growth':>8} {'beyond index':>13}")
    worst = 0.0
    for name in sorted(start):
        if name not in end:
            print(f"{name:32} {start[name] / 2**20:>12.1f} {'replaced':>11}")
            continue
        growth = (end[name] - start[name]) / start[name]
        share = index_bytes if name.startswith(INDEX_HOLDERS) else 0
        beyond = (end[name] - share - start[name]) / start[name]
        worst = max(worst, beyond)
        print(f"{name:32} {start[name] / 2**20:>12.1f} {end[name] / 2**20:>11.1f} {growth:>8.1%} {beyond:>13.1%}")
    print(f"rows stored during the soak: {rows_after - rows_before} (index share {index_bytes / 2**20:.1f} MB)")
    print(f"requests: {sum(outcomes.values())}, outcomes: {dict(outcomes)}")
    print(f"SOAK minutes={args.minutes:g} errors={errors} worst_rss_growth={worst:.1%} "
          f"(targets: errors 0, growth < 10%)")
    return 0 if errors == 0 and worst < 0.10 else 1


if __name__ == "__main__":
    sys.exit(main())
