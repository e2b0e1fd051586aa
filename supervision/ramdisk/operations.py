"""The RAM disk for models: check it can work, set it up (mount, check memory, copy), clear it, describe it.

Two kinds of failure are kept apart, because an operator needs different things from them:
- `RamDiskUnavailable`: no right to mount, or a path that cannot be used. The service runs from disk, after
  one clear warning; nothing else changes.
- `RamDiskRefused`: a size that cannot work (too small for the models, or leaving the workers too little
  memory). `start` stops and says which size would work: serving from disk instead would hide the mistake.

Sizes are in GiB, as mount's `size=` option counts them.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from shared.settings import Settings
from supervision.ramdisk import tmpfs
from supervision.ramdisk.model_copy import PART_PREFIX, RECORD_PREFIX, copy_verified
from supervision.ramdisk.tmpfs import Rights, Tmpfs, TmpfsError

log = logging.getLogger(__name__)
GIB = 2**30
# A worker holds more than its mapped model: llama.cpp's KV cache and compute buffers grow with the model,
# and there is the Python process. Measured here (unique set size): all-MiniLM-L6-v2 (46 MB) 64 MB,
# SmolLM2-135M (98 MB) 239 MB. We count the model's size again plus 256 MiB per worker, which covers both.
WORKER_PROCESS_BYTES = 256 * 2**20
# For the gateway, the writer, the database's page cache and the rest of the system.
SYSTEM_RESERVE_BYTES = 1 * GIB
# The files in our RAM disk that are ours: the marker says we mounted it (so `clear` may unmount it);
# without it, the tmpfs was there before us and `clear` only removes what we copied in.
MOUNTED_MARKER = ".mounted-by-llama-embeddings"
COPIES_LIST = ".copied-by-llama-embeddings"


class RamDiskUnavailable(RuntimeError):
    """No right to mount, or an unusable path: serve from disk."""


class RamDiskRefused(RuntimeError):
    """A RAM disk size that cannot work; the message suggests one that does."""


@dataclass(frozen=True)
class Plan:
    """What `set_up` will do, decided without changing anything."""

    tmpfs: Tmpfs
    rights: Rights
    mounted: bool  # a tmpfs is already there
    sources: dict[str, Path]  # model -> installed file


def ramdisk_paths(settings: Settings, disk_paths: dict[str, str]) -> dict[str, str]:
    """Where each model's copy lives on the RAM disk."""
    return {model: str(settings.ramdisk_path / Path(path).name) for model, path in disk_paths.items()}


def plan(settings: Settings, disk_paths: dict[str, str], workers: dict[str, int]) -> Plan:
    """Check rights, path, size and memory. Raises RamDiskUnavailable or RamDiskRefused."""
    path = settings.ramdisk_path
    wanted = Tmpfs.for_current_user(path, settings.ramdisk_size_in_gb)
    sources = {model: Path(p) for model, p in disk_paths.items()}
    models_bytes = sum(source.stat().st_size for source in sources.values())
    worker_bytes = sum((sources[model].stat().st_size + WORKER_PROCESS_BYTES) * count
                       for model, count in workers.items() if model in sources)
    existing = tmpfs.mount_at(path)
    if existing is not None:
        if not existing.is_tmpfs:
            raise RamDiskUnavailable(f"RAMDISK_PATH {path} is a {existing.fstype} mount, not a tmpfs")
        if not os.access(path, os.W_OK):
            raise RamDiskUnavailable(f"the tmpfs at RAMDISK_PATH {path} is not writable by this user")
        to_copy = sum(source.stat().st_size for source in sources.values() if not _same_size(source, path))
        free = shutil.disk_usage(path).free
        if to_copy > free:
            raise RamDiskUnavailable(
                f"the tmpfs at {path} has {_gb(free)} GB free but {_gb(to_copy)} GB of models to take; clear it "
                "(`supervisor.py ramdisk clear`) so that `start` mounts it again at RAMDISK_SIZE_IN_GB")
        _check_memory(settings, to_copy, models_bytes, worker_bytes)
        return Plan(existing_tmpfs(path), Rights("", "already mounted"), True, sources)
    rights = tmpfs.mount_rights(wanted)
    if not rights:
        raise RamDiskUnavailable(f"no right to mount a tmpfs at {path}: {rights.reason} (README 'RAM disk' "
                                 "shows the sudoers lines; `supervisor.py ramdisk status` prints them)")
    if path.exists() and not path.is_dir():
        raise RamDiskUnavailable(f"RAMDISK_PATH {path} is not a directory")
    if path.is_dir() and any(path.iterdir()):
        raise RamDiskUnavailable(f"RAMDISK_PATH {path} is a directory with files in it; a tmpfs mounted there "
                                 "would hide them")
    if wanted.size_bytes < _needed_size(models_bytes):
        raise RamDiskRefused(
            f"RAMDISK_SIZE_IN_GB={settings.ramdisk_size_in_gb:g} cannot hold the served models "
            f"({_gb(models_bytes)} GB); set RAMDISK_SIZE_IN_GB={suggested_size_gb(models_bytes):g}")
    _check_memory(settings, wanted.size_bytes, models_bytes, worker_bytes)
    return Plan(wanted, rights, False, sources)


def set_up(settings: Settings, disk_paths: dict[str, str], workers: dict[str, int]) -> dict[str, str]:
    """Mount if needed and copy the models in; return each model's path on the RAM disk.

    Raises RamDiskRefused, or RamDiskUnavailable when anything fails (a mount that it made is undone then).
    """
    chosen = plan(settings, disk_paths, workers)
    path = chosen.tmpfs.path
    if not chosen.mounted:
        try:
            path.mkdir(parents=True, exist_ok=True)
            tmpfs.mount(chosen.tmpfs, chosen.rights)
            (path / MOUNTED_MARKER).write_text("mounted by the Llama Embeddings Service; `supervisor.py ramdisk "
                                               "clear` unmounts it\n")
        except (OSError, TmpfsError) as exc:
            _undo_mount(chosen)
            raise RamDiskUnavailable(f"could not mount a tmpfs at {path}: {exc}") from exc
        log.info("mounted a %s GB tmpfs at %s", _gb(chosen.tmpfs.size_bytes), path)
    else:
        log.info("using the %s GB tmpfs already mounted at %s", _gb(chosen.tmpfs.size_bytes), path)
    try:
        _remove_stale(path, {source.name for source in chosen.sources.values()})
        _record_copies(path, {source.name for source in chosen.sources.values()})
        for model, source in chosen.sources.items():
            result = copy_verified(source, path)
            log.info("%s %s on the RAM disk (%s MB, sha256 %s)", "copied" if result.copied else "unchanged copy of",
                     model, round(result.size_bytes / 2**20, 1), result.sha256[:12])
    except OSError as exc:
        if not chosen.mounted:
            _undo_mount(chosen)
        raise RamDiskUnavailable(f"could not copy the models to {path}: {exc}") from exc
    return ramdisk_paths(settings, disk_paths)


def clear(settings: Settings) -> str:
    """Unmount the RAM disk if we mounted it; else remove the copies we put in. Returns what was done.

    The caller makes sure no worker maps from it any more. Raises TmpfsError if the unmount fails.
    """
    path = settings.ramdisk_path
    existing = tmpfs.mount_at(path)
    if existing is None or not existing.is_tmpfs:
        return f"no RAM disk is mounted at {path}; nothing to clear"
    if (path / MOUNTED_MARKER).exists():
        target = existing_tmpfs(path)
        tmpfs.unmount(target, tmpfs.umount_rights(target))
        return f"unmounted the RAM disk at {path}"
    for name in _listed_copies(path):
        for file in (path / name, path / f"{RECORD_PREFIX}{name}"):
            file.unlink(missing_ok=True)
    (path / COPIES_LIST).unlink(missing_ok=True)
    return f"removed the model copies from {path} (the tmpfs there was not mounted by this service; it stays)"


def describe(settings: Settings) -> dict[str, Any]:
    """The RAM disk as the operator needs to see it (`supervisor.py ramdisk status`)."""
    path = settings.ramdisk_path
    wanted = Tmpfs.for_current_user(path, settings.ramdisk_size_in_gb)
    existing = tmpfs.mount_at(path)
    rights = tmpfs.mount_rights(wanted)
    mount: dict[str, Any] | None = None
    if existing is not None:
        usage = shutil.disk_usage(path)
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")) \
            if os.access(path, os.R_OK | os.X_OK) else []
        mount = {"fstype": existing.fstype, "size_bytes": usage.total, "used_bytes": usage.used,
                 "mounted_by_us": (path / MOUNTED_MARKER).exists(),
                 "files": [{"name": f.name, "size_bytes": f.stat().st_size} for f in files]}
    return {"enabled": settings.use_ramdisk, "path": str(path), "size_in_gb": settings.ramdisk_size_in_gb,
            "mount": mount, "rights": rights.via, "rights_reason": rights.reason,
            "sudoers_lines": wanted.sudoers_lines(_user_name())}


def suggested_size_gb(models_bytes: int) -> float:
    """The smallest size, in tenths of a GiB, that holds the models with a little room to spare."""
    return math.ceil(_needed_size(models_bytes) / (GIB / 10)) / 10


def existing_tmpfs(path: Path) -> Tmpfs:
    """The mounted tmpfs at `path` described as ours (its commands are what we would have run)."""
    stat = path.stat()
    return Tmpfs(path, shutil.disk_usage(path).total, stat.st_uid, stat.st_gid)


def _check_memory(settings: Settings, ramdisk_bytes: int, models_bytes: int, worker_bytes: int) -> None:
    available = psutil.virtual_memory().available
    left = available - ramdisk_bytes
    if left >= worker_bytes + SYSTEM_RESERVE_BYTES:
        return
    problem = (f"RAMDISK_SIZE_IN_GB={settings.ramdisk_size_in_gb:g} would leave {_gb(max(left, 0))} GB of the "
               f"{_gb(available)} GB available, and the workers need about {_gb(worker_bytes)} GB "
               f"(plus {_gb(SYSTEM_RESERVE_BYTES)} GB for the rest of the system)")
    if available - _needed_size(models_bytes) >= worker_bytes + SYSTEM_RESERVE_BYTES:
        raise RamDiskRefused(f"{problem}; the served models need only {_gb(models_bytes)} GB: "
                             f"set RAMDISK_SIZE_IN_GB={suggested_size_gb(models_bytes):g}")
    raise RamDiskRefused(f"{problem}; even the {suggested_size_gb(models_bytes):g} GB the served models need "
                         "would not leave enough: set USE_RAMDISK=false, serve fewer models, or add memory")


def _needed_size(models_bytes: int) -> int:
    # tmpfs allocates whole pages and we keep small records beside the models: 2% and 1 MiB of room.
    return int(models_bytes * 1.02) + 2**20


def _same_size(source: Path, directory: Path) -> bool:
    copy = directory / source.name
    return copy.is_file() and copy.stat().st_size == source.stat().st_size


def _remove_stale(path: Path, keep: set[str]) -> None:
    """Drop earlier copies of models no longer served, and half-written copies, from our own RAM disk."""
    if not (path / MOUNTED_MARKER).exists():
        return  # someone else's tmpfs: touch only what we copied (see clear)
    keep_all = keep | {f"{RECORD_PREFIX}{name}" for name in keep} | {MOUNTED_MARKER, COPIES_LIST}
    for file in path.iterdir():
        if file.is_file() and (file.name not in keep_all or file.name.startswith(PART_PREFIX)):
            file.unlink()  # a worker that still maps it keeps its pages until it exits


def _record_copies(path: Path, names: set[str]) -> None:
    (path / COPIES_LIST).write_text("\n".join(sorted(names | set(_listed_copies(path)))) + "\n")


def _listed_copies(path: Path) -> list[str]:
    try:
        return [name for name in (path / COPIES_LIST).read_text().splitlines() if name and "/" not in name]
    except OSError:
        return []


def _undo_mount(chosen: Plan) -> None:
    if tmpfs.mount_at(chosen.tmpfs.path) is not None:
        try:
            tmpfs.unmount(chosen.tmpfs, chosen.rights)
        except TmpfsError as exc:
            log.error("could not undo the mount at %s: %s", chosen.tmpfs.path, exc)


def _gb(size: int) -> float:
    return round(size / GIB, 2)


def _user_name() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return str(os.geteuid())
