"""Soak: mixed load for a while, then the RSS of every process at start and end, and the error count.

Usage: .venv/bin/python -m benchmarks.soak [--minutes 10] [--concurrency 8]
Targets (issue 6): RSS growth under 10% for every process, 0 errors.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

from benchmarks.corpus import sentences
from tests.harness import PROJECT_ROOT, Service

MODELS_DIR = PROJECT_ROOT / "data" / "test-models"


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

    def request(client: httpx.AsyncClient) -> object:
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
                response = await request(client)  # type: ignore[misc]
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
        service = Service(Path(data_dir), MODELS_DIR, {"MODELS_TO_SERVE": "all-minilm-l6-v2", "LOG_LEVEL": "WARNING"})
        service.start()
        try:
            asyncio.run(_load(service, 20, args.concurrency))  # warm up caches and indexes before the baseline
            start = _rss(service)
            outcomes = asyncio.run(_load(service, args.minutes * 60, args.concurrency))
            end = _rss(service)
        finally:
            service.stop()
    errors = sum(count for outcome, count in outcomes.items() if outcome != "200")
    print(f"{'process':32} {'RSS start MB':>12} {'RSS end MB':>11} {'growth':>8}")
    worst = 0.0
    for name in sorted(start):
        growth = (end.get(name, 0) - start[name]) / start[name] if name in end else float("nan")
        worst = max(worst, growth)
        print(f"{name:32} {start[name] / 2**20:>12.1f} {end.get(name, 0) / 2**20:>11.1f} {growth:>8.1%}")
    print(f"requests: {sum(outcomes.values())}, outcomes: {dict(outcomes)}")
    print(f"SOAK minutes={args.minutes:g} errors={errors} worst_rss_growth={worst:.1%} "
          f"(targets: errors 0, growth < 10%)")
    return 0 if errors == 0 and worst < 0.10 else 1


if __name__ == "__main__":
    sys.exit(main())
