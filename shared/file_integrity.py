"""Files that must be what they claim and survive a crash: SHA-256 of a file, fsync of a file or a folder."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a reader, even after a crash, finds the old file or the new one whole."""
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with staging.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    staging.replace(path)
    fsync_path(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
