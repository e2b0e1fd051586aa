"""Each role on a host of its own: gateway and writer on one, workers on another, PostgreSQL on a third.

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
    gateway: Service
    workers: Service
    worker_link: str  # the workers' host's end of its cable to the gateway's host


@pytest.fixture
def three_hosts(tmp_path: Path, models_dir: Path) -> Iterator[Layout]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    hosts = Hosts()
    started: list[Service] = []
    cluster: PostgresCluster | None = None
    try:
        hosts.link("", "10.77.0.1", "gateway", "10.77.0.2")  # the test's own way in
        _, worker_link = hosts.link("gateway", "10.77.1.1", "workers", "10.77.1.2")
        hosts.link("gateway", "10.77.2.1", "database", "10.77.2.2")
        binaries = server_binaries()
        assert binaries is not None, "scripts/setup.sh --test installs PostgreSQL"
        cluster = PostgresCluster(binaries, host="10.77.2.2", launcher=hosts.launcher("database"),
                                  clients="10.77.2.0/24").start()
        shared = {"CLUSTER_SECRET": "the secret of this test's three hosts", "MODELS_TO_SERVE": MINILM,
                  "REQUEST_TIMEOUT_SECONDS": str(REQUEST_TIMEOUT), "WORKER_WAIT_SECONDS": "3"}
        gateway = Service(tmp_path / "gateway-host", models_dir, host="10.77.0.2", launcher=hosts.launcher("gateway"),
                          env_overrides={**shared, "DATABASE_URL": cluster.database(),
                                         "WORKER_BIND_ADDRESS": "tcp://10.77.1.1:5557"})
        workers = Service(tmp_path / "workers-host", models_dir, launcher=hosts.launcher("workers"),
                          env_overrides={**shared, "WORKER_CONNECT_ADDRESS": "tcp://10.77.1.1:5557"})
        for service, roles in ((gateway, "gateway,writer"), (workers, "workers")):
            service.cli("start", "--roles", roles)
            service.remember_pids()
            started.append(service)
        yield Layout(hosts, gateway, workers, worker_link)
    finally:
        for service in reversed(started):
            service.stop()
        if cluster is not None:
            cluster.close()
        hosts.close()
        leftover = [pid for service in started for pid in service.leftover_processes()]
        assert not leftover, f"processes left after stop: {leftover}"


def _embed(layout: Layout, text: str) -> tuple[int, float]:
    started = time.monotonic()
    try:
        status = httpx.post(f"{layout.gateway.base_url}/get_embedding_vector/", json={"text": text},
                            timeout=REQUEST_TIMEOUT + 10).status_code
    except httpx.HTTPError:
        status = 0
    return status, time.monotonic() - started


def test_a_request_to_the_gateway_host_is_computed_on_the_workers_host_and_stored_on_the_database_host(
        three_hosts: Layout) -> None:
    assert [row["role"] for row in three_hosts.gateway.status()["processes"]] == ["writer", "gateway"]
    assert {row["role"] for row in three_hosts.workers.status()["processes"]} == {"worker"}
    assert three_hosts.gateway.embed("computed on another host")["dimensions"] == 384
    # The gateway reads its stored strings from PostgreSQL, on the database host.
    three_hosts.gateway.wait_for(lambda: "computed on another host" in httpx.get(
        f"{three_hosts.gateway.base_url}/get_all_stored_strings/", timeout=10).json()["strings"], timeout=10,
        message="the row in PostgreSQL on the database host")


def test_with_the_workers_host_unplugged_requests_get_503_within_the_deadline_and_it_serves_5_s_after_replugging(
        three_hosts: Layout) -> None:
    assert three_hosts.gateway.embed("before the cable is pulled")["dimensions"] == 384
    three_hosts.hosts.set_link("workers", three_hosts.worker_link, up=False)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda i: _embed(three_hosts, f"sent with the workers' host unplugged {i}"),
                                 range(8)))
    assert {status for status, _ in outcomes} == {503}, outcomes
    assert max(elapsed for _, elapsed in outcomes) < REQUEST_TIMEOUT + 2, outcomes
    three_hosts.hosts.set_link("workers", three_hosts.worker_link, up=True)
    replugged = time.monotonic()
    while (status := _embed(three_hosts, f"after replugging {time.monotonic()}")[0]) != 200:
        assert time.monotonic() - replugged < 5, f"not serving 5 s after the cable came back (last status {status})"
        time.sleep(0.2)
