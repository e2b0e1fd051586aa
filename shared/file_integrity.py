"""Files that must be what they claim and survive a crash: SHA-256 of a file, fsync, atomic replacement."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable


def sha256_digest(path: Path) -> hashlib._Hash:
    """The running SHA-256 of a file's bytes (a resumed download keeps updating it)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256")


def sha256_of_file(path: Path) -> str:
    return sha256_digest(path).hexdigest()


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's data to the disk (a rename is durable once its folder is synced)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def atomic_replace(path: Path, write: Callable[[Path], object]) -> None:
    """Replace `path` by what `write(staging)` puts in a staging file beside it, so that a reader, even after a
    crash, finds the old file or the new one whole: durability (fsync) before visibility (rename)."""
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(staging)
        fsync_path(staging)
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_replace(path, lambda staging: staging.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
