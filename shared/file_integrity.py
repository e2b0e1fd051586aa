"""Files that must be what they claim and survive a crash: SHA-256 of a file, fsync, atomic replacement.

Two ways to put a file in place, both durable (fsync) before visible (rename):
- `atomic_replace` / `atomic_write_*`: small files we write ourselves (manifests, catalogues, verdicts);
- `copy_into_staging` then `publish_verified`: large files streamed from elsewhere (installs, downloads,
  RAM-disk copies), renamed into place only when their SHA-256 is the one expected.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import IO, Callable

_BLOCK = 1 << 20


class IntegrityError(RuntimeError):
    """A staged file is not what it should be; it has been deleted. The message names it and both digests."""


def sha256_digest(path: Path) -> hashlib._Hash:
    """The running SHA-256 of a file's bytes (a resumed download keeps updating it)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256")


def sha256_of_file(path: Path) -> str:
    """The SHA-256 of a file's bytes, hex."""
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
    """`path` holds `data`, whole, even after a crash (see atomic_replace)."""
    atomic_replace(path, lambda staging: staging.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    """`path` holds `text` as UTF-8, whole, even after a crash (see atomic_replace)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def copy_into_staging(source: IO[bytes], staging: Path, on_block: Callable[[int], object] = lambda _size: None) -> str:
    """Stream `source` into `staging` (replacing it) and flush it to the disk; return the SHA-256 of what was
    written. `on_block(size)` after each block, for a progress bar."""
    digest = hashlib.sha256()
    with staging.open("wb") as out:
        while block := source.read(_BLOCK):
            out.write(block)
            digest.update(block)
            on_block(len(block))
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def publish_verified(staging: Path, target: Path, *, actual_sha256: str, expected_sha256: str = "", name: str = "") -> None:
    """Rename the finished `staging` file to `target` when its SHA-256 (`actual_sha256`, computed as it was written)
    is `expected_sha256` (empty: not checked), and make the rename durable; otherwise delete it and raise
    IntegrityError naming `name` (default: the target's file name)."""
    if expected_sha256 and actual_sha256 != expected_sha256.lower():
        staging.unlink(missing_ok=True)
        raise IntegrityError(f"{name or target.name}: SHA-256 mismatch: expected {expected_sha256.lower()}, "
                             f"got {actual_sha256}")
    fsync_path(staging)
    os.replace(staging, target)
    fsync_path(target.parent)
