"""Starts the real service as a user does (`supervisor.py start`) on a free port in a temporary directory."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import psutil

from shared.control_client import NotRunning, send_command

PROJECT_ROOT = Path(__file__).resolve().parent.parent


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Poll `condition` on the running loop until it holds or `seconds` pass (the caller's assertions then say
    what did not happen)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.005)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Service:
    data_dir: Path
    models_dir: Path
    env_overrides: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    known_pids: set[int] = field(default_factory=set)
    host: str = "127.0.0.1"  # where the gateway listens (an address inside a test's network namespace, say)
    launcher: tuple[str, ...] = ()  # put before every command: `ip netns exec NAME` runs the host elsewhere

    @property
    def database_url(self) -> str:
        """The store this instance uses: its DATABASE_URL, or the SQLite file under DATA_DIR."""
        return self.env_overrides.get("DATABASE_URL") or f"sqlite:///{self.data_dir / 'llama_embeddings.sqlite'}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("LLAMA_EMBEDDING")}
        env.update({
            "DATA_DIR": str(self.data_dir),
            "MODELS_DIR": str(self.models_dir),
            "LLAMA_EMBEDDING_SERVER_LISTEN_PORT": str(self.port),
            "LLAMA_EMBEDDING_SERVER_LISTEN_HOST": self.host,
            "LLAMA_EMBEDDINGS_CONFIG": str(self.data_dir / "no-config.env"),
            # One worker per model unless a test says otherwise: many tests name "the" worker. The default
            # (auto) has its own test in test_supervisor.py.
            "WORKERS_PER_MODEL": "1",
        })
        if "TEST_ENGINE_CRASH" not in self.env_overrides:
            # Every service of the run shares the canary's verdicts (they are per model file and CPU, not per
            # instance), as instances on one machine may: each start would otherwise run a canary child per model
            # (a second or two of both cores). Services that crash their engine on purpose keep their own.
            env["CANARY_DIR"] = str(self.models_dir / "canary-verdicts")
        env.update(self.env_overrides)
        return env

    def cli(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*self.launcher, sys.executable, str(PROJECT_ROOT / "supervisor.py"), *args], env=self.env,
                                cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"supervisor.py {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def start(self) -> Service:
        self.cli("start")
        self.remember_pids()
        return self

    def status(self) -> dict[str, Any]:
        return json.loads(self.cli("status", "--json").stdout)

    def control_status(self) -> dict[str, Any]:
        """The same report straight from the supervisor's control socket: no CLI process, so cheap enough to poll
        under load (a `status` process took seconds there)."""
        return send_command(f"ipc://{self.data_dir / 'run' / 'control.sock'}", "status", timeout=10).data

    def remember_pids(self) -> None:
        status = self.control_status()  # not the CLI: a `status` process costs a second and a half, twice a service
        self.known_pids |= {status["pid"], *(row["pid"] for row in status["processes"])}

    def workers(self, model: str | None = None) -> list[dict[str, Any]]:
        return [row for row in self.control_status()["processes"]
                if row["role"] == "worker" and (model is None or row["model"] == model)]

    def wait_for(self, predicate: Any, timeout: float = 30.0, message: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout}s waiting for {message}")

    def stop(self) -> None:
        try:
            self.remember_pids()
        except NotRunning:  # stopped already (a test stopped it, or its start failed)
            pass
        self.cli("stop", check=False)

    def leftover_processes(self) -> list[int]:
        alive = []
        for pid in self.known_pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        return alive

    def client(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=timeout)

    def embed(self, text: str, model: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"text": text}
        if model:
            body["model_name"] = model
        response = httpx.post(f"{self.base_url}/get_embedding_vector/", json=body, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()


@contextlib.contextmanager
def running(data_dir: Path, models_dir: Path, **env: str) -> Iterator[Service]:
    """A started service that is stopped afterwards, leaving no process behind."""
    service = Service(data_dir, models_dir, env_overrides=env)
    try:
        yield service.start()
    finally:
        service.stop()
        leftover = service.leftover_processes()
        assert not leftover, f"processes left after stop: {leftover}"
