"""modelstore.download and the url/import paths of modelstore.install, against a real local HTTP server.

The server is stdlib http.server with a small Range-aware handler whose switches simulate the failures
met in the wild: a connection cut mid-file, a server that ignores Range, corrupted bytes.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFWriter

from modelstore.catalogue import LOCAL_CATALOGUE_NAME, ModelEntry, load_catalogue
from modelstore.download import DownloadError, download, part_path
from modelstore.install import import_folder, install

FILE_PATH = "/tiny.gguf"
CHUNK = 1024  # small chunks so a few-KB file still takes many reads


@dataclass
class ServerState:
    payload: bytes
    cut_after: int | None = None  # close the connection after this many body bytes (once)
    ignore_range: bool = False  # answer 200 with the whole file even when asked for a range
    corrupt: bool = False  # flip one byte in the middle of what is sent
    midway: Callable[[], None] | None = None  # called after half the body has been sent
    range_headers: list[str | None] = field(default_factory=list)
    bytes_sent: int = 0


class RangeHandler(BaseHTTPRequestHandler):
    server: FileServer

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        state = self.server.state
        if self.path != FILE_PATH:
            self.send_error(404, "Not Found")
            return
        data = bytearray(state.payload)
        if state.corrupt:
            data[len(data) // 2] ^= 0xFF
        requested = self.headers.get("Range")
        state.range_headers.append(requested)
        match = re.fullmatch(r"bytes=(\d+)-", requested or "")
        if match and not state.ignore_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            start = 0
            self.send_response(200)
        body = bytes(data[start:])
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if state.cut_after is not None:
            body, state.cut_after = body[: state.cut_after], None
        half = len(body) // 2
        self.wfile.write(body[:half])
        self.wfile.flush()
        if state.midway:
            state.midway()
        self.wfile.write(body[half:])
        state.bytes_sent += len(body)
        self.close_connection = True


class FileServer(ThreadingHTTPServer):
    daemon_threads = True
    server_address: tuple[str, int]  # bound to ("127.0.0.1", 0): an IPv4 (host, port)
    state: ServerState


@pytest.fixture(scope="session")
def gguf_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small but valid GGUF (llama arch, 64-d, context 128, two tensors): ~5 KB."""
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_name("tiny-test-model")
    writer.add_embedding_length(64)
    writer.add_context_length(128)
    writer.add_block_count(1)
    rng = np.random.default_rng(0)
    writer.add_tensor("token_embd.weight", rng.standard_normal((16, 64), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(64, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def server(gguf_file: Path) -> Iterator[FileServer]:
    httpd = FileServer(("127.0.0.1", 0), RangeHandler)
    httpd.state = ServerState(payload=gguf_file.read_bytes())
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def url_of(httpd: FileServer, path: str = FILE_PATH) -> str:
    host, port = httpd.server_address[:2]
    return f"http://{host}:{port}{path}"


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_matches_sha256_and_destination_appears_only_complete(server: FileServer, tmp_path: Path) -> None:
    payload = server.state.payload
    destination = tmp_path / "model.gguf"
    seen_midway: list[bool] = []
    server.state.midway = lambda: seen_midway.append(destination.exists())

    result = download(url_of(server), destination, sha256=sha256_of(payload), expected_size=len(payload),
                      progress=False, chunk_size=CHUNK)

    assert result == destination
    assert seen_midway == [False]  # nothing at the destination name while bytes were still arriving
    assert sha256_of(destination.read_bytes()) == sha256_of(payload)
    assert not part_path(destination).exists()


def test_resumes_interrupted_download_from_part_file(server: FileServer, tmp_path: Path) -> None:
    payload = server.state.payload
    destination = tmp_path / "model.gguf"
    server.state.cut_after = 3000

    with pytest.raises(DownloadError, match="resume"):
        download(url_of(server), destination, sha256=sha256_of(payload), progress=False, chunk_size=CHUNK)
    assert not destination.exists()
    part_size = part_path(destination).stat().st_size
    assert 0 < part_size < len(payload)

    download(url_of(server), destination, sha256=sha256_of(payload), progress=False, chunk_size=CHUNK)

    assert destination.read_bytes() == payload
    assert server.state.range_headers == [None, f"bytes={part_size}-"]
    assert server.state.bytes_sent < 2 * len(payload)


def test_restarts_from_zero_when_server_ignores_range(server: FileServer, tmp_path: Path) -> None:
    payload = server.state.payload
    destination = tmp_path / "model.gguf"
    part_path(destination).write_bytes(b"\x00" * 1000)  # a prefix that would fail the checksum if kept
    server.state.ignore_range = True

    download(url_of(server), destination, sha256=sha256_of(payload), progress=False, chunk_size=CHUNK)

    assert server.state.range_headers == ["bytes=1000-"]
    assert destination.read_bytes() == payload


def test_complete_part_file_answered_416_is_finished_without_refetching(server: FileServer, tmp_path: Path) -> None:
    payload = server.state.payload
    destination = tmp_path / "model.gguf"
    part_path(destination).write_bytes(payload)

    download(url_of(server), destination, sha256=sha256_of(payload), progress=False, chunk_size=CHUNK)

    assert destination.read_bytes() == payload
    assert server.state.bytes_sent == 0


def test_checksum_mismatch_raises_and_removes_part_file(server: FileServer, tmp_path: Path) -> None:
    payload = server.state.payload
    destination = tmp_path / "model.gguf"
    server.state.corrupt = True
    expected = sha256_of(payload)
    corrupted = bytearray(payload)
    corrupted[len(corrupted) // 2] ^= 0xFF

    with pytest.raises(DownloadError) as caught:
        download(url_of(server), destination, sha256=expected, progress=False, chunk_size=CHUNK)

    assert expected in str(caught.value) and sha256_of(bytes(corrupted)) in str(caught.value)
    assert not part_path(destination).exists()
    assert not destination.exists()


def test_http_404_raises_naming_url_and_status(server: FileServer, tmp_path: Path) -> None:
    url = url_of(server, "/missing.gguf")

    with pytest.raises(DownloadError) as caught:
        download(url, tmp_path / "model.gguf", progress=False)

    assert url in str(caught.value) and "404" in str(caught.value)


def test_unreachable_host_raises_quickly(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/model.gguf"
    started = time.monotonic()

    with pytest.raises(DownloadError, match=re.escape(url)):
        download(url, tmp_path / "model.gguf", progress=False, timeout=5)

    assert time.monotonic() - started < 2


def test_install_url_entry_puts_gguf_in_models_dir(server: FileServer, tmp_path: Path) -> None:
    payload = server.state.payload
    entry = ModelEntry(name="tiny", description="test model", source="url", format="gguf", file="tiny.gguf",
                       pooling="mean", dimensions=64, max_tokens=128, size_bytes=len(payload),
                       sha256=sha256_of(payload), url=url_of(server))
    models_dir = tmp_path / "models"

    path = install(entry, models_dir, progress=False)

    assert path == models_dir / "tiny.gguf"
    assert path.read_bytes() == payload
    assert entry.is_installed(models_dir)


def test_import_gguf_file_is_listed_with_dimensions_from_metadata(gguf_file: Path, tmp_path: Path) -> None:
    models_dir = tmp_path / "models"

    entry = import_folder(gguf_file, models_dir, name="tiny-imported")

    assert (models_dir / LOCAL_CATALOGUE_NAME).is_file()
    listed = load_catalogue(models_dir)["tiny-imported"]
    assert listed == entry
    assert (listed.source, listed.dimensions, listed.max_tokens, listed.pooling) == ("local", 64, 128, "mean")
    assert listed.installed_path(models_dir).read_bytes() == gguf_file.read_bytes()


def test_concurrent_installs_fetch_the_file_once(server: FileServer, tmp_path: Path) -> None:
    payload = server.state.payload
    entry = ModelEntry(name="tiny", description="test model", source="url", format="gguf", file="tiny.gguf",
                       pooling="mean", dimensions=64, max_tokens=128, size_bytes=len(payload),
                       sha256=sha256_of(payload), url=url_of(server))
    models_dir = tmp_path / "models"
    results: list[Path] = []
    workers = [threading.Thread(target=lambda: results.append(install(entry, models_dir, progress=False)))
               for _ in range(2)]

    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=10)

    assert results == [models_dir / "tiny.gguf"] * 2
    assert (models_dir / "tiny.gguf").read_bytes() == payload
    assert server.state.range_headers == [None]  # the second installer waited, then found it installed
