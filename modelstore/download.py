"""Fetch one file over HTTP(S) so that a crash or a cut connection never leaves a half file behind.

Bytes go to `<destination>.part` first; an interrupted download is resumed from there with a `Range`
request on the next call (model files are gigabytes, starting over is expensive). The part file is
renamed to the destination only after its size and SHA-256 have been checked, so a file at the
destination name is always complete. Callers that may race (two installers) must hold a lock around
the call: two writers appending to the same part file would interleave.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from shared.file_integrity import IntegrityError, publish_verified, sha256_digest

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class DownloadError(RuntimeError):
    """A download that failed; the message names the URL and what went wrong."""


def is_url(target: str) -> bool:
    """True for an http(s) URL (a pull of a GGUF file), False for a catalogue name."""
    return target.startswith(("http://", "https://"))


def url_file_name(url: str) -> str:
    """The file name a URL's path ends with, which a pulled GGUF is saved under."""
    return url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "model.gguf"


def part_path(destination: Path) -> Path:
    """Where the bytes of `destination` collect until they have been verified."""
    return destination.with_name(destination.name + ".part")


def download(
    url: str,
    destination: Path,
    *,
    sha256: str = "",
    expected_size: int = 0,
    progress: bool = True,
    timeout: float = 30.0,
    chunk_size: int = 1 << 20,
) -> Path:
    """Download `url` to `destination`, resuming a previous attempt, and return `destination`.

    `sha256` and `expected_size` are checked when given (empty / 0 skip the check). `timeout` bounds the
    connect and every read, not the whole transfer. On a mismatch the part file is deleted (resuming a
    corrupt prefix would never succeed); on a network error it is kept so the next call resumes.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(destination)
    if expected_size and part.is_file() and part.stat().st_size > expected_size:
        part.unlink()  # longer than the file can be: not a prefix of it
    digest, size = _fetch(url, part, progress=progress, timeout=timeout, chunk_size=chunk_size)
    if expected_size and size != expected_size:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: size mismatch: expected {expected_size} bytes, got {size}")
    try:
        publish_verified(part, destination, actual_sha256=digest.hexdigest(), expected_sha256=sha256, name=url)
    except IntegrityError as exc:
        raise DownloadError(str(exc)) from None
    return destination


def _fetch(url: str, part: Path, *, progress: bool, timeout: float, chunk_size: int) -> tuple[hashlib._Hash, int]:
    """Bring `part` to the full file; return its SHA-256 (resumed prefix included) and size.

    Restarts from zero at most once, when the server's answer does not continue our prefix.
    """
    for _attempt in range(2):
        offset = part.stat().st_size if part.is_file() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 416 and offset:
                # Nothing left to send: the part is complete, unless the server's total says otherwise.
                total = _total_from_416(exc.headers.get("Content-Range", ""))
                if total is None or total == offset:
                    return sha256_digest(part), offset
                part.unlink()
                continue
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise DownloadError(f"{url}: cannot connect: {exc.reason}") from None
        except (OSError, http.client.HTTPException) as exc:  # timeouts, resets before any header
            raise DownloadError(f"{url}: request failed: {exc!r}") from None
        with response:
            status = getattr(response, "status", None) or 200
            if offset and status == 206:
                match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
                if match is None or int(match.group(1)) != offset:
                    part.unlink()  # a range we did not ask for: trust nothing, start over
                    continue
            elif offset:
                offset = 0  # the server ignored Range and sends the whole file (200)
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            digest = sha256_digest(part) if offset else hashlib.sha256()
            size = _receive(response, part, digest, offset, total, url=url, progress=progress, chunk_size=chunk_size)
            return digest, size
    raise DownloadError(f"{url}: the server does not answer range requests consistently")


def _receive(
    response: http.client.HTTPResponse,
    part: Path,
    digest: hashlib._Hash,
    offset: int,
    total: int | None,
    *,
    url: str,
    progress: bool,
    chunk_size: int,
) -> int:
    """Append the response body to `part` (truncating it when offset is 0); return the part's size."""
    received = offset
    bar = tqdm(
        total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
        desc=part.name.removesuffix(".part"), file=sys.stderr,
        disable=None if progress else True,  # None: tqdm stays quiet when stderr is not a terminal
    )
    with bar, part.open("ab" if offset else "wb") as out:
        try:
            while chunk := response.read(chunk_size):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as exc:
            raise DownloadError(f"{url}: interrupted after {received} bytes ({exc!r}); call again to resume") from None
        finally:
            out.flush()
            os.fsync(out.fileno())  # what the next resume relies on must be on disk
    # http.client returns b"" rather than raising when the peer closes early, so count ourselves.
    if total is not None and received < total:
        raise DownloadError(f"{url}: connection closed after {received} of {total} bytes; call again to resume")
    return received


def _total_from_416(content_range: str) -> int | None:
    match = re.fullmatch(r"bytes\s+\*/(\d+)", content_range.strip())
    return int(match.group(1)) if match else None


