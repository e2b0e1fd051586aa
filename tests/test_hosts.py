"""Each role on a host of its own: gateway and writer on one, workers on another, PostgreSQL on a third, and a
second gateway host without the writer (it builds its own search indexes from PostgreSQL).

The hosts are network namespaces joined by veth pairs (tests/netns.py); the pytest process reaches the
gateway's host through a link of its own. Everything runs as a user would start it: `supervisor.py start
--roles ...` on each host, with tcp binds that need CLUSTER_SECRET.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import MINILM
from tests.harness import Service
from tests.netns import Hosts, unavailable_reason
from tests.postgres import PostgresCluster, server_binaries

pytestmark = pytest.mark.slow

REQUEST_TIMEOUT = 12.0


@dataclass
class Layout:
    hosts: Hosts
    gateway: Service  # gateway + writer
    second_gateway: Service  # gateway only
    workers: Service
    worker_link: str  # the workers' host's end of its cable to the gateway's host
    second_worker_link: str  # and to the second gateway's host


@pytest.fixture(scope="module")
def four_hosts(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Layout]:
    """The four hosts, shared by this module's tests (a test that pulls a cable plugs it back in)."""
    tmp_path = tmp_path_factory.mktemp("hosts")
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    hosts = Hosts()
    started: list[Service] = []
    cluster: PostgresCluster | None = None
    try:
        hosts.link("", "10.77.0.1", "gateway", "10.77.0.2")  # the test's own ways in
        hosts.link("", "10.77.3.1", "second", "10.77.3.2")
        _, worker_link = hosts.link("gateway", "10.77.1.1", "workers", "10.77.1.2")
        _, second_worker_link = hosts.link("second", "10.77.4.1", "workers", "10.77.4.2")
        hosts.link("gateway", "10.77.2.1", "database", "10.77.2.2")
        hosts.link("second", "10.77.5.1", "database", "10.77.5.2")
        hosts.link("gateway", "10.77.6.1", "second", "10.77.6.2")  # the second gateway's rows go to the writer
        binaries = server_binaries()
        assert binaries is not None, "scripts/setup.sh --test installs PostgreSQL"
        cluster = PostgresCluster(binaries, host="10.77.2.2", also_listen="10.77.5.2",
                                  launcher=hosts.launcher("database"), clients="10.77.0.0/16").start()
        database = cluster.database()
        shared = {"CLUSTER_SECRET": "the secret of this test's four hosts", "MODELS_TO_SERVE": MINILM,
                  "REQUEST_TIMEOUT_SECONDS": str(REQUEST_TIMEOUT), "WORKER_WAIT_SECONDS": "3",
                  "WRITER_CONNECT_ADDRESS": "tcp://10.77.6.1:5560"}
        gateway = Service(tmp_path / "gateway-host", models_dir, host="10.77.0.2", launcher=hosts.launcher("gateway"),
                          env_overrides={**shared, "DATABASE_URL": database, "WORKER_BIND_ADDRESS": "tcp://10.77.1.1:5557",
                                         "WRITER_BIND_ADDRESS": "tcp://10.77.6.1:5560"})
        second = Service(tmp_path / "second-host", models_dir, host="10.77.3.2", launcher=hosts.launcher("second"),
                         env_overrides={**shared, "DATABASE_URL": database.replace("10.77.2.2", "10.77.5.2"),
                                        "WORKER_BIND_ADDRESS": "tcp://10.77.4.1:5557"})
        workers = Service(tmp_path / "workers-host", models_dir, launcher=hosts.launcher("workers"),
                          env_overrides={**shared,
                                         "WORKER_CONNECT_ADDRESS": "tcp://10.77.1.1:5557,tcp://10.77.4.1:5557"})
        for service, roles in ((gateway, "gateway,writer"), (second, "gateway"), (workers, "workers")):
            service.cli("start", "--roles", roles)
            service.remember_pids()
            started.append(service)
        yield Layout(hosts, gateway, second, workers, worker_link, second_worker_link)
    finally:
        for service in reversed(started):
            service.stop()
        if cluster is not None:
            cluster.close()
        hosts.close()
        leftover = [pid for service in started for pid in service.leftover_processes()]
        assert not leftover, f"processes left after stop: {leftover}"


def _search(service: Service, text: str) -> list[tuple[str, float]]:
    response = httpx.post(f"{service.base_url}/get_most_similar_string_from_database/",
                          json={"text": text, "number_of_most_similar_strings_to_return": 5}, timeout=30)
    assert response.status_code == 200, response.text
    return [(hit["text"], round(hit["similarity"], 5)) for hit in response.json()["results"]]


def test_a_gateway_host_without_the_writer_answers_search_with_the_same_results(four_hosts: Layout) -> None:
    assert {row["role"] for row in four_hosts.second_gateway.status()["processes"]} == {"gateway", "indexer"}
    stored = [f"a sentence about {topic}, stored through the first gateway" for topic in
              ("rivers and lakes", "mountain walking", "baking bread", "train timetables", "garden birds")]
    with httpx.Client(base_url=four_hosts.gateway.base_url, timeout=60) as client:
        assert client.post("/get_embedding_vectors/", json={"texts": stored}).status_code == 200
    query = "where to see birds in the garden"
    four_hosts.second_gateway.embed(query)  # both gateways then hold the query too (left out of its results)
    four_hosts.gateway.embed(query)
    four_hosts.gateway.wait_for(lambda: len(_search(four_hosts.second_gateway, query)) == 5, timeout=20,
                                 message="the second host's own index to hold the rows")
    first, second = _search(four_hosts.gateway, query), _search(four_hosts.second_gateway, query)
    assert first == second and first[0][0] == stored[4]


def _embed(layout: Layout, text: str) -> tuple[int, float]:
    started = time.monotonic()
    try:
        status = httpx.post(f"{layout.gateway.base_url}/get_embedding_vector/", json={"text": text},
                            timeout=REQUEST_TIMEOUT + 10).status_code
    except httpx.HTTPError:
        status = 0
    return status, time.monotonic() - started


def test_a_request_to_the_gateway_host_is_computed_on_the_workers_host_and_stored_on_the_database_host(
        four_hosts: Layout) -> None:
    assert [row["role"] for row in four_hosts.gateway.status()["processes"]] == ["writer", "gateway"]
    assert {row["role"] for row in four_hosts.workers.status()["processes"]} == {"worker"}
    assert four_hosts.gateway.embed("computed on another host")["dimensions"] == 384
    # The gateway reads its stored strings from PostgreSQL, on the database host.
    four_hosts.gateway.wait_for(lambda: "computed on another host" in httpx.get(
        f"{four_hosts.gateway.base_url}/get_all_stored_strings/", timeout=10).json()["strings"], timeout=10,
        message="the row in PostgreSQL on the database host")


def test_with_the_workers_host_unplugged_requests_get_503_within_the_deadline_and_it_serves_5_s_after_replugging(
        four_hosts: Layout) -> None:
    assert four_hosts.gateway.embed("before the cable is pulled")["dimensions"] == 384
    four_hosts.hosts.set_link("workers", four_hosts.worker_link, up=False)  # from the first gateway only
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda i: _embed(four_hosts, f"sent with the workers' host unplugged {i}"),
                                 range(8)))
    assert {status for status, _ in outcomes} == {503}, outcomes
    assert max(elapsed for _, elapsed in outcomes) < REQUEST_TIMEOUT + 2, outcomes
    four_hosts.hosts.set_link("workers", four_hosts.worker_link, up=True)
    replugged = time.monotonic()
    while (status := _embed(four_hosts, f"after replugging {time.monotonic()}")[0]) != 200:
        assert time.monotonic() - replugged < 5, f"not serving 5 s after the cable came back (last status {status})"
        time.sleep(0.2)
