"""Copy model files into a directory (the RAM disk), skipping copies that are already identical.

A copy counts as identical only when its size and its SHA-256 equal the source's, so a damaged or
half-written copy is never served. A new copy is written under a temporary name and renamed when complete:
a worker started meanwhile maps either the old whole file or the new whole file, never a partial one.

Hashing the source means reading it from disk, which is what the RAM disk spares a restart. So each copy
has a small record beside it: the source's SHA-256 together with the source's size, inode, mtime and ctime.
While those are unchanged the recorded digest stands for the source (any write changes mtime and ctime),
and only the copy, in memory, is hashed again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from shared.file_integrity import copy_into_staging, publish_verified, sha256_of_file

PART_PREFIX = ".part-"
RECORD_PREFIX = ".sha256-"


@dataclass(frozen=True)
class CopyResult:
    """A model file's copy in the target directory, made now or found identical, with its size and SHA-256."""

    source: Path
    target: Path
    copied: bool  # False: an identical copy was already there
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class _SourceRecord:
    source: str
    size: int
    inode: int
    mtime_ns: int
    ctime_ns: int
    sha256: str = ""

    @classmethod
    def of(cls, source: Path, sha256: str = "") -> _SourceRecord:
        stat = source.stat()
        return cls(str(source), stat.st_size, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns, sha256)


def copy_verified(source: Path, directory: Path) -> CopyResult:
    """`directory/<source name>` with the same bytes as `source`; copied only if it differs."""
    target = directory / source.name
    record_path = directory / f"{RECORD_PREFIX}{source.name}"
    now = _SourceRecord.of(source)
    if target.is_file() and target.stat().st_size == now.size:
        digest = _recorded_digest(record_path, now) or sha256_of_file(source)
        if sha256_of_file(target) == digest:
            _write_record(record_path, now, digest)
            return CopyResult(source, target, False, now.size, digest)
    record_path.unlink(missing_ok=True)
    staging = directory / f"{PART_PREFIX}{source.name}"
    try:
        with source.open("rb") as reader:
            digest = copy_into_staging(reader, staging)
        if _SourceRecord.of(source) != now or staging.stat().st_size != now.size:
            raise OSError(f"{source} changed while it was being copied; try again")
        publish_verified(staging, target, actual_sha256=digest)
    finally:
        staging.unlink(missing_ok=True)
    _write_record(record_path, now, digest)
    return CopyResult(source, target, True, now.size, digest)


def _recorded_digest(record_path: Path, now: _SourceRecord) -> str:
    """The source's digest recorded at the last copy, if the source has not changed since; else ""."""
    try:
        recorded = _SourceRecord(**json.loads(record_path.read_text()))
    except (OSError, ValueError, TypeError):
        return ""
    return recorded.sha256 if _SourceRecord(**{**asdict(recorded), "sha256": ""}) == now else ""


def _write_record(record_path: Path, source: _SourceRecord, sha256: str) -> None:
    record_path.write_text(json.dumps(asdict(_SourceRecord(**{**asdict(source), "sha256": sha256}))))
