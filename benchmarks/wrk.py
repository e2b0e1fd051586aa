"""wrk (Debian's `wrk`) as the load generator: C, epoll, a few microseconds of CPU per request, so the server is
what gets measured (an httpx client topped out near 170 requests/s here; wrk measured 10,700 on the same server).

A Lua script sends a different body per request, read from a file of bodies: request k of thread t sends line
t + k * threads, so no body is sent twice while there are lines left ("uncached" stays uncached); `cycle`
lets a run go round a small set instead (cached hits).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_SCRIPT = """
local bodies = {}
for line in io.lines("%(bodies)s") do bodies[#bodies + 1] = line end
local threads = %(threads)d
local counter = 0
local id = 0
local created = 0
function setup(thread)
  thread:set("id", created)
  created = created + 1
end
request = function()
  local index = id + counter * threads
  counter = counter + 1
  if %(cycle)s then index = index %% #bodies end
  return wrk.format("POST", "%(path)s", {["Content-Type"] = "application/json"}, bodies[index + 1])
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    per_second: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers and socket errors


def ensure_wrk() -> str:
    """The wrk binary, installed from Debian when missing (as root, or with sudo)."""
    found = shutil.which("wrk")
    if found:
        return found
    sudo = [] if shutil.which("sudo") is None else ["sudo"]
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "wrk"], check=True, capture_output=True)
    return shutil.which("wrk") or "wrk"


def run_wrk(url: str, path: str, bodies: list[dict[str, object]], *, connections: int, seconds: float,
            threads: int = 1, cycle: bool = False, timeout: float = 2.0) -> WrkResult:
    """POST `bodies` (JSON) to `url` + `path` from `connections` connections for `seconds`. Answers slower than
    `timeout` count as errors and not in the latencies (wrk's own default is 2 s; a slow model needs more)."""
    with tempfile.TemporaryDirectory() as folder:
        lines = Path(folder) / "bodies.txt"
        lines.write_text("\n".join(json.dumps(body) for body in bodies) + "\n")
        script = Path(folder) / "bodies.lua"
        script.write_text(_SCRIPT % {"bodies": lines, "threads": threads, "cycle": "true" if cycle else "false",
                                     "path": path})
        # wrk reads whole seconds only ("20.6s" is an error): rounded up.
        out = subprocess.run([ensure_wrk(), "-t", str(threads), "-c", str(connections), "-d", f"{math.ceil(seconds)}s",
                              "--timeout", f"{math.ceil(timeout)}s", "--latency", "-s", str(script), url],
                             check=True, capture_output=True, text=True).stdout
    return _parse(out)


def _parse(out: str) -> WrkResult:
    def milliseconds(label: str) -> float:
        match = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if match is None:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]  # wrk always says it
    per_second = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]  # likewise
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, socket.groups())) if socket else 0)
    return WrkResult(requests, per_second, milliseconds("50%"), milliseconds("99%"), errors)
