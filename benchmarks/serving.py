"""Waiting for a server a benchmark started: until it answers, or saying why it never will."""

from __future__ import annotations

import subprocess
import time

import httpx


def wait_until_serving(server: subprocess.Popen[bytes], name: str, url: str, path: str, timeout: float) -> None:
    """Return once GET `url` + `path` answers 200; RuntimeError if `server` exits first, TimeoutError after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            args = server.args if isinstance(server.args, (list, tuple)) else [server.args]
            raise RuntimeError(f"{name} exited with {server.returncode}: {' '.join(str(arg) for arg in args)}")
        try:
            if httpx.get(f"{url}{path}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} did not answer {path} within {timeout}s")
        time.sleep(0.3)
