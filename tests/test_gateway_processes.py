"""GATEWAY_PROCESSES=2: two gateway processes on one port, each reaching every worker; one killed is replaced
while the other serves, and /metrics counts the whole instance."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import MINILM
from tests.harness import Service, running

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_gateways(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Service]:
    # Polls of the store once a minute: a gateway learns of the other's rows from the writer's STORED alone.
    with running(tmp_path_factory.mktemp("two-gateways"), models_dir, MODELS_TO_SERVE=MINILM,
                 GATEWAY_PROCESSES="2", SEARCH_INDEX_POLL_MS="60000") as service:
        yield service


def _gateways(service: Service) -> list[dict[str, Any]]:
    return [row for row in service.status()["processes"] if row["role"] == "gateway"]


def _fresh_connection_post(service: Service, path: str, body: dict[str, object]) -> httpx.Response:
    # A new connection per request: the kernel picks the accepting gateway per connection, not per request.
    with httpx.Client(base_url=service.base_url, timeout=30) as client:
        return client.post(path, json=body)


def test_both_gateway_processes_run_and_each_has_the_worker_registered(two_gateways: Service) -> None:
    gateways = _gateways(two_gateways)
    assert sorted(row["slot"] for row in gateways) == [0, 1]
    [worker] = two_gateways.workers()
    assert all([w["pid"] for w in row["workers"]] == [worker["pid"]] for row in gateways)


def test_requests_spread_over_both_gateways_get_the_same_answers(two_gateways: Service) -> None:
    texts = [f"a text for whichever gateway accepts, number {i}" for i in range(40)]
    first = [_fresh_connection_post(two_gateways, "/get_embedding_vector/", {"text": t}) for t in texts]
    again = [_fresh_connection_post(two_gateways, "/get_embedding_vector/", {"text": t}) for t in texts]
    assert all(r.status_code == 200 for r in first + again)
    assert all(a.json()["embedding"] == b.json()["embedding"] for a, b in zip(first, again))
    time.sleep(1.5)  # the gateways' STATUS carries their counters once a second
    served = [row["counters"]["cache_hits"] + row["counters"]["cache_misses"]
              for row in _gateways(two_gateways)]
    assert sum(served) >= 80 and min(served) > 0, served  # both gateways took requests
    similar = _fresh_connection_post(two_gateways, "/compute_similarity_between_strings/",
                                     {"text1": texts[0], "text2": texts[0]})
    assert similar.status_code == 200 and abs(similar.json()["similarity"] - 1.0) < 1e-5


def test_metrics_count_the_requests_of_every_gateway(two_gateways: Service) -> None:
    def counted() -> float:
        exposition = httpx.get(f"{two_gateways.base_url}/metrics", timeout=10).text
        pattern = r'llama_embeddings_http_requests_total\{endpoint="/get_all_stored_strings/",method="GET",status="200"\} (\S+)'
        return sum(float(value) for value in re.findall(pattern, exposition))

    before = counted()
    for _ in range(30):
        with httpx.Client(base_url=two_gateways.base_url, timeout=10) as client:
            assert client.get("/get_all_stored_strings/").status_code == 200
    time.sleep(2.5)  # every gateway leaves its samples once a second
    assert counted() - before == 30


def test_a_killed_gateway_is_replaced_while_the_other_serves_and_no_connection_is_refused(
        two_gateways: Service) -> None:
    victim = _gateways(two_gateways)[0]
    texts = [f"sent while a gateway dies, number {i}" for i in range(200)]

    async def load() -> list[tuple[float, httpx.Response | Exception]]:
        started = time.monotonic()
        limits = httpx.Limits(max_connections=50, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=two_gateways.base_url, timeout=30, limits=limits) as client:
            async def one(index: int, text: str) -> tuple[float, httpx.Response | Exception]:
                await asyncio.sleep(index * 0.01)  # over two seconds
                sent = time.monotonic() - started
                try:
                    return sent, await client.post("/get_embedding_vector/", json={"text": text})
                except httpx.HTTPError as exc:
                    return sent, exc

            async def kill() -> None:
                await asyncio.sleep(0.3)
                os.kill(int(victim["pid"]), signal.SIGKILL)

            outcomes, _ = await asyncio.gather(asyncio.gather(*(one(i, t) for i, t in enumerate(texts))), kill())
            return list(outcomes)

    outcomes = asyncio.run(load())
    refused_late = [sent for sent, outcome in outcomes if isinstance(outcome, httpx.ConnectError) and sent > 1.3]
    assert not refused_late, refused_late  # the killed one dropped what it held; nobody was refused after it
    late = [outcome for sent, outcome in outcomes if sent > 1.3]
    assert all(isinstance(r, httpx.Response) and r.status_code == 200 for r in late), late
    two_gateways.wait_for(lambda: sorted(row["slot"] for row in _gateways(two_gateways)
                                         if row["pid"] != victim["pid"] and row["state"] == "ready") == [0, 1],
                          timeout=15, message="a replacement in the killed gateway's slot")
    two_gateways.remember_pids()


def test_a_text_one_gateway_computed_is_a_cache_hit_on_the_other_once_committed(two_gateways: Service) -> None:
    # The other gateway skips the store lookup for hashes it has not seen (gateway/stored_hashes.py): unless the
    # writer tells it of the commit, the first request that lands on it computes the text again.
    text = "computed by one gateway process, then asked of both"
    assert _fresh_connection_post(two_gateways, "/get_embedding_vector/", {"text": text}).json()["cached"] is False
    deadline = time.monotonic() + 10
    while text not in httpx.get(f"{two_gateways.base_url}/get_all_stored_strings/", timeout=10).json()["strings"]:
        assert time.monotonic() < deadline, "the writer did not commit the row"
        time.sleep(0.05)
    answers = [_fresh_connection_post(two_gateways, "/get_embedding_vector/", {"text": text}) for _ in range(20)]
    assert [a.json()["cached"] for a in answers] == [True] * 20  # 20 new connections: both gateways took some


def test_a_collection_deleted_through_one_gateway_leaves_the_others_memory_long_before_its_next_poll(
        two_gateways: Service) -> None:
    # Polls of the store are a minute apart here: only the writer's notice after the delete (a STORED with the
    # new marks) can reach the other gateway in time.
    texts = [f"held in the memory of both gateway processes, number {n}" for n in range(10)]
    batch: dict[str, object] = {"texts": texts, "collection": "forgotten-by-both"}
    assert _fresh_connection_post(two_gateways, "/get_embedding_vectors/", batch).status_code == 200
    deadline = time.monotonic() + 10
    while not set(texts) <= set(httpx.get(f"{two_gateways.base_url}/get_all_stored_strings/", timeout=10).json()["strings"]):
        assert time.monotonic() < deadline, "the writer did not commit the rows"
        time.sleep(0.05)
    for _ in range(16):  # new connections: both gateways answer the batch, from the store, then from memory
        assert _fresh_connection_post(two_gateways, "/get_embedding_vectors/", batch).json()["cached"] == [True] * 10
    with httpx.Client(base_url=two_gateways.base_url, timeout=30) as client:
        response = client.request("DELETE", "/collections/forgotten-by-both")
    assert response.status_code == 200, response.text
    time.sleep(1.0)
    # One request per text, each on a new connection: about half land on the gateway that did not delete.
    cached = [_fresh_connection_post(two_gateways, "/get_embedding_vector/", {"text": text}).json()["cached"]
              for text in texts]
    assert cached == [False] * 10
