"""Child processes as the supervisor sees them: how they are started and how their end is described."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from shared.protocol import Status
from shared.settings import PROJECT_ROOT


@dataclass(frozen=True)
class ChildSpec:
    """What a child process is started as: its role and, for a worker, its model, id, threads, model file and slot."""

    role: str  # "writer", "gateway", "worker" or "indexer" (a gateway host without the writer)
    model: str = ""
    worker_id: int = 0
    threads: int = 0
    model_path: str = ""
    slot: int = 0  # a worker's place among its model's workers, a gateway's index (0..N-1); backoff is per slot
    listen_fd: int | None = None  # a gateway's inherited listening socket

    @property
    def slot_key(self) -> str:
        """The key of this child's restart history: "writer", "gateway:<slot>" or "worker:<model>:<slot>"."""
        if self.role == "worker":
            return worker_slot_key(self.model, self.slot)
        return f"gateway:{self.slot}" if self.role == "gateway" else self.role

    @property
    def name(self) -> str:
        """How the logs name the child: `worker <model>#<worker id>`, `gateway-<slot>` past the first, or its role."""
        if self.role == "worker":
            return f"worker {self.model}#{self.worker_id}"
        return f"gateway-{self.slot}" if self.role == "gateway" and self.slot else self.role

    def argv(self, served_models: tuple[str, ...], foreground: bool) -> list[str]:
        """The command line that starts the child: `python -m gateway` or `python -m workers` with its arguments."""
        extra = ["--foreground"] if foreground else []
        if self.role == "gateway":
            listen = ["--listen-fd", str(self.listen_fd)] if self.listen_fd is not None else []
            return [sys.executable, "-m", "gateway", "--models", ",".join(served_models), "--index", str(self.slot),
                    *listen, *extra]
        if self.role == "writer":
            return [sys.executable, "-m", "workers", "writer", *extra]
        if self.role == "indexer":
            return [sys.executable, "-m", "workers", "indexer", "--models", ",".join(served_models), *extra]
        return [sys.executable, "-m", "workers", "embedder", "--model", self.model, "--worker-id",
                str(self.worker_id), "--threads", str(self.threads), "--model-path", self.model_path, *extra]


def worker_slots_prefix(model: str) -> str:
    """What the slot keys of a model's workers begin with."""
    return f"worker:{model}:"


def worker_slot_key(model: str, slot: int) -> str:
    """The restart-history key of worker slot `slot` of `model`."""
    return f"{worker_slots_prefix(model)}{slot}"


@dataclass
class Child:
    """A started child process, its latest STATUS, whether it serves, and since when it is being stopped."""

    spec: ChildSpec
    process: subprocess.Popen[bytes]
    started_at: float = field(default_factory=time.monotonic)
    status: Status | None = None
    ready: bool = False
    stopping_since: float | None = None

    @property
    def pid(self) -> int:
        """The child's process id, which its STATUS reports carry too."""
        return self.process.pid

    def terminate(self) -> None:
        """Send SIGTERM and note when, so that the supervisor kills the child after STOP_TIMEOUT_SECONDS."""
        if self.stopping_since is None:
            self.stopping_since = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """Send SIGKILL, unless the child has exited already."""
        if self.process.poll() is None:
            self.process.kill()


def spawn(spec: ChildSpec, env: dict[str, str], served_models: tuple[str, ...], foreground: bool,
          stderr: IO[bytes] | None) -> Child:
    """Start `spec` as `python -m ...` from the project root with exactly `env`."""
    process = subprocess.Popen(
        spec.argv(served_models, foreground), cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL,
        stdout=None if foreground else subprocess.DEVNULL, stderr=None if foreground else stderr,
        pass_fds=(spec.listen_fd,) if spec.listen_fd is not None else (),
    )
    return Child(spec, process)


def child_environment(base: dict[str, str], settings_env: dict[str, str]) -> dict[str, str]:
    """The environment every child gets: ours, with paths made absolute so that all processes agree."""
    env = {**base, **settings_env}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), base.get("PYTHONPATH", "")]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def pid_file(run_dir: Path) -> Path:
    """Where the running supervisor keeps its pid."""
    return run_dir / "supervisor.pid"
