"""llama.cpp's native `llama-server`, the strongest peer of an embedding service on llama.cpp (issue 17).

Built once from the llama.cpp that llama-cpp-python's sdist vendors (the version pyproject.toml pins, so both
run the same kernels), natively (`-march=native`: built without AMX it served MiniLM 10% slower), and cached
under data/llama-server/<version>-<cpu key>/ (about 6 minutes on 2 cores). `serve` runs it as issue 17 says.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Iterator

from benchmarks.serving import wait_until_serving
from tests.harness import PROJECT_ROOT, free_port

CACHE = PROJECT_ROOT / "data" / "llama-server"
# The settings issue 17 compares with: 8 slots (continuous batching), flash attention, 2 threads.
SERVE_ARGS = ("--embedding", "--pooling", "mean", "-t", "2", "-np", "8", "-c", "4096", "-b", "512", "-ub", "512",
              "-fa", "on")


def pinned_version() -> str:
    """The llama-cpp-python version pyproject.toml pins."""
    match = re.search(r'"llama-cpp-python==([^"]+)"', (PROJECT_ROOT / "pyproject.toml").read_text())
    if match is None:
        raise RuntimeError("pyproject.toml pins no llama-cpp-python version")
    return match.group(1)


def cpu_key() -> str:
    """The CPU model and flags, hashed: a native build runs only where they are the same."""
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    wanted = [next((line for line in lines if line.startswith(field)), "") for field in ("model name", "flags")]
    return hashlib.sha256("\n".join(wanted).encode()).hexdigest()[:16]


def binary_path(version: str | None = None) -> Path:
    """Where the cached binary for this CPU and llama-cpp-python version is (whether or not it is there)."""
    return CACHE / f"{version or pinned_version()}-{cpu_key()}" / "llama-server"


def ensure_llama_server() -> Path:
    """The cached llama-server binary, built from the sdist when missing."""
    target = binary_path()
    if target.is_file():
        return target
    version = pinned_version()
    print(f"building llama-server from llama-cpp-python {version}'s sdist (about 6 minutes on 2 cores)", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        subprocess.run(["pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(work),
                        f"llama-cpp-python=={version}"], check=True, capture_output=True)
        archive = next(work.glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(archive) as tar:
            tar.extractall(work, filter="data")
        source = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"))
        build = source / "build"
        subprocess.run(["cmake", "-S", str(source), "-B", str(build), "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_CURL=OFF",
                        "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF"], check=True, capture_output=True)
        # One compile per core: a bare -j starts them all at once (load average 69 seen here).
        subprocess.run(["cmake", "--build", str(build), "--target", "llama-server", "-j", str(os.cpu_count() or 1)],
                       check=True, capture_output=True)
        install(build / "bin" / "llama-server", version)
    return target


def install(built: Path, version: str | None = None) -> Path:
    """Copy a built binary into the cache (a build made by hand, say), atomically."""
    target = binary_path(version)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    shutil.copy2(built, partial)
    partial.replace(target)
    return target


@contextlib.contextmanager
def serve(model_path: Path, *, weight_repack: bool = True, timeout: float = 120) -> Iterator[tuple[str, int]]:
    """A running llama-server on a free port for the block: its base URL and pid. `weight_repack=False` is
    `--no-repack`, which SmolLM2's Q4_1 needs on AMX CPUs (the native AMX kernel segfaults on repacked weights,
    ggml-org/llama.cpp#20824)."""
    port = free_port()
    command = [str(ensure_llama_server()), "-m", str(model_path), *SERVE_ARGS, "--host", "127.0.0.1",
               "--port", str(port), *([] if weight_repack else ["--no-repack"])]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(server, "llama-server", url, "/health", timeout)
        yield url, server.pid
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
