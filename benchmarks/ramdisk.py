"""Cold start-to-ready time of each default model, served from disk and from the RAM disk.

Run as root from the checkout: `python -m benchmarks.ramdisk [--repeats 3]`. For each default model it starts
the real service (`supervisor.py start`, that model alone, one worker) in a temporary directory and times the
command until it reports ready, three ways:

  disk           USE_RAMDISK=false, page cache dropped: the worker reads the model from the device.
  ramdisk-first  USE_RAMDISK=true, nothing mounted, page cache dropped: start mounts the tmpfs, copies the
                 model in (reading it from the device), and the worker maps it from memory.
  ramdisk        USE_RAMDISK=true, the RAM disk already holds the model (a restart), page cache dropped
                 (tmpfs pages are not dropped by that: they are the RAM disk itself).

Besides the whole start it reports the worker's own model load ("loaded ... in N s" in its log). Dropping the
page cache needs root (`echo 3 > /proc/sys/vm/drop_caches`); without it the figures are warm-cache ones, and
the output says so.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from modelstore.catalogue import load_catalogue
from modelstore.install import ensure_installed
from shared.settings import load_settings
from supervision.ramdisk import tmpfs
from tests.harness import PROJECT_ROOT, Service

_LOADED = re.compile(r"loaded \S+ from (\S+) in ([0-9.]+)s")
WAYS = ("disk", "ramdisk-first", "ramdisk")


@dataclass(frozen=True)
class Run:
    start_seconds: float
    load_seconds: float
    mapped_from: str


def drop_page_cache() -> bool:
    """Sync, then drop clean page cache, dentries and inodes; False if not permitted."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def timed_start(root: Path, models_dir: Path, model: str, ramdisk: Path | None, size_gb: float,
                drop: bool) -> Run:
    env = {"MODELS_TO_SERVE": model, "DEFAULT_MODEL_NAME": model, "DEFAULT_MODELS": model,
           "USE_RAMDISK": "true" if ramdisk else "false"}
    if ramdisk is not None:
        env |= {"RAMDISK_PATH": str(ramdisk), "RAMDISK_SIZE_IN_GB": f"{size_gb:g}"}
    service = Service(Path(tempfile.mkdtemp(dir=root)), models_dir, env)
    if drop:
        drop_page_cache()
    began = time.perf_counter()
    try:
        service.start()
        elapsed = time.perf_counter() - began
        [worker] = service.workers()
    finally:
        service.stop()
    [log] = sorted((service.data_dir / "logs").glob("worker-*.log"))
    match = _LOADED.search(log.read_text())
    return Run(elapsed, float(match.group(2)) if match else float("nan"), worker["mapped_from"])


def unmount(path: Path) -> None:
    if tmpfs.mount_at(path) is not None:
        subprocess.run(["umount", str(path)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models-dir", type=Path,
                        default=Path(os.environ.get("LES_TEST_MODELS_DIR", PROJECT_ROOT / "data" / "test-models")))
    args = parser.parse_args()
    models = list(load_settings().default_models)
    ensure_installed(models, args.models_dir, load_catalogue(args.models_dir))
    catalogue = load_catalogue(args.models_dir)
    drop = drop_page_cache()
    cache = "dropped before every start" if drop else "NOT dropped (needs root): warm-cache figures"
    print(f"{os.cpu_count()} cores; page cache {cache}; median of {args.repeats}")
    print(f"{'MODEL':24} {'SIZE MB':>8} {'WAY':14} {'START S':>8} {'LOAD S':>7}  MAPPED FROM")
    medians: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory(prefix="ramdisk-bench-") as scratch:
        root = Path(scratch)
        ramdisk = root / "ramdisk"
        try:
            for model in models:
                size = catalogue[model].installed_path(args.models_dir).stat().st_size
                size_gb = max(0.1, round(size * 1.2 / 2**30 + 0.05, 1))
                runs: dict[str, list[Run]] = {way: [] for way in WAYS}
                for _ in range(args.repeats):
                    runs["disk"].append(timed_start(root, args.models_dir, model, None, size_gb, drop))
                    unmount(ramdisk)
                    runs["ramdisk-first"].append(timed_start(root, args.models_dir, model, ramdisk, size_gb, drop))
                    runs["ramdisk"].append(timed_start(root, args.models_dir, model, ramdisk, size_gb, drop))
                    unmount(ramdisk)
                for way in WAYS:
                    start = statistics.median(r.start_seconds for r in runs[way])
                    load = statistics.median(r.load_seconds for r in runs[way])
                    medians[(model, way)] = start
                    print(f"{model:24} {size / 2**20:>8.1f} {way:14} {start:>8.2f} {load:>7.2f}  {runs[way][-1].mapped_from}")
        finally:
            unmount(ramdisk)
    print("ratios (start-to-ready, RAM disk / disk): " + ", ".join(
        f"{model} first {medians[(model, 'ramdisk-first')] / medians[(model, 'disk')]:.2f}x, "
        f"restart {medians[(model, 'ramdisk')] / medians[(model, 'disk')]:.2f}x" for model in models))


if __name__ == "__main__":
    main()
