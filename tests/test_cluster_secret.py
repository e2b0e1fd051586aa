"""Nobody else on the network: binds other hosts can reach need CLUSTER_SECRET, and peers without it are refused."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq

from modelstore.catalogue import load_catalogue
from shared.curve import OpenBindRefused, check_bind, secure_client, secure_server, start_authenticator
from tests.conftest import MINILM
from tests.harness import PROJECT_ROOT, Service, free_port, running


def test_start_refuses_a_worker_bind_other_hosts_can_reach_without_a_secret(tmp_path: Path, models_dir: Path) -> None:
    service = Service(tmp_path, models_dir, env_overrides={"WORKER_BIND_ADDRESS": f"tcp://0.0.0.0:{free_port()}"})
    result = service.cli("start", check=False)
    assert result.returncode == 1
    assert "WORKER_BIND_ADDRESS" in result.stderr and "CLUSTER_SECRET" in result.stderr
    assert not service.leftover_processes()


@pytest.mark.parametrize("address", ["tcp://*:5557", "tcp://0.0.0.0:5557", "tcp://10.1.2.3:5557", "tcp://[::]:5557"])
def test_an_address_other_hosts_can_reach_needs_the_secret(address: str) -> None:
    with pytest.raises(OpenBindRefused, match="CLUSTER_SECRET"):
        check_bind("WRITER_BIND_ADDRESS", address, "")
    check_bind("WRITER_BIND_ADDRESS", address, "s3cret")


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:5557", "tcp://localhost:5557", "tcp://[::1]:5557",
                                     "ipc:///tmp/x.sock"])
def test_loopback_and_ipc_binds_need_no_secret(address: str) -> None:
    check_bind("WORKER_BIND_ADDRESS", address, "")


def _exchange(server_secret: str, client_secret: str) -> bytes | None:
    """What a ROUTER secured with `server_secret` receives from a DEALER that knows `client_secret` ("" = plain)."""
    context = zmq.Context()
    authenticator = start_authenticator(context, server_secret)
    address = f"tcp://127.0.0.1:{free_port()}"
    server, client = context.socket(zmq.ROUTER), context.socket(zmq.DEALER)
    try:
        secure_server(server, address, server_secret)
        server.bind(address)
        secure_client(client, address, client_secret)
        client.connect(address)
        client.send(b"hello")
        return server.recv_multipart()[-1] if server.poll(1500) else None
    finally:
        server.close(linger=0)
        client.close(linger=0)
        if authenticator is not None:
            authenticator.stop()
        context.term()


def test_a_client_that_knows_the_secret_is_heard() -> None:
    assert _exchange("the cluster secret", "the cluster secret") == b"hello"


def test_a_client_with_another_secret_is_not_heard() -> None:
    assert _exchange("the cluster secret", "a guess") is None


def test_a_client_without_curve_is_not_heard() -> None:
    assert _exchange("the cluster secret", "") is None


@pytest.mark.slow
def test_with_the_secret_the_service_runs_over_tcp_and_a_worker_without_it_is_refused_and_logged(
        tmp_path: Path, models_dir: Path) -> None:
    worker_address = f"tcp://127.0.0.1:{free_port()}"
    secret = "shared by our processes only"
    with running(tmp_path / "service", models_dir, MODELS_TO_SERVE=MINILM, CLUSTER_SECRET=secret,
                 WORKER_BIND_ADDRESS=worker_address,
                 WRITER_BIND_ADDRESS=f"tcp://127.0.0.1:{free_port()}") as service:
        assert service.embed("carried over CURVE")["dimensions"] == 384  # worker and writer links both work
        entry = load_catalogue(models_dir)[MINILM]
        rogue_env = {**service.env, "DATA_DIR": str(tmp_path / "rogue"), "CLUSTER_SECRET": "a guess",
                     "WORKER_CONNECT_ADDRESS": worker_address}
        rogue = subprocess.Popen([sys.executable, "-m", "workers", "embedder", "--model", MINILM, "--worker-id", "99",
                                  "--threads", "1", "--model-path", str(entry.installed_path(models_dir))],
                                 env=rogue_env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            gateway_log = service.data_dir / "logs" / "gateway.log"
            service.wait_for(lambda: "refused a peer" in gateway_log.read_text(), timeout=60,
                             message="the gateway to log the refused worker")
            time.sleep(1.0)  # a READY that got through would be registered by now
            registered = [w["pid"] for row in service.status()["processes"] if row["role"] == "gateway"
                          for w in row["workers"]]
            assert rogue.pid not in registered and registered
            assert rogue.poll() is None  # it keeps trying, in vain
        finally:
            rogue.kill()
            rogue.wait()
