"""The writer process (workers/writer/process.py) over its real ZeroMQ socket, on a real SQLite file: the marks
it tells the gateways, and a delete held until the rows sent before it have come."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq
from sqlalchemy import select

from shared.protocol import (
    Ack,
    Delete,
    Deleted,
    EmbeddingRow,
    Message,
    Ping,
    Pong,
    Stored,
    StoreMarks,
    Write,
    decode,
    encode,
)
from shared.schema import embeddings, sqlite_engine, text_hash
from tests.harness import PROJECT_ROOT

MODEL = "all-minilm-l6-v2"


def row(text: str, collection: str = "") -> EmbeddingRow:
    return EmbeddingRow(text, text_hash(text), MODEL, b"\x00" * 16, 4, collection=collection)


class Gateway:
    """A DEALER standing in for a gateway: sends messages and waits for one of a kind."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], address: str) -> None:
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(address)

    def send(self, message: Message) -> None:
        self.socket.send_multipart(encode(message))

    def wait_for(self, kind: type, timeout: float = 10.0) -> Message:
        deadline = time.monotonic() + timeout
        while self.socket.poll(max(1, int((deadline - time.monotonic()) * 1000))):
            message = decode(self.socket.recv_multipart())
            if isinstance(message, kind):
                return message
            if time.monotonic() > deadline:
                break
        raise AssertionError(f"no {kind.__name__} from the writer in {timeout}s")

    def marks(self) -> StoreMarks | None:
        self.send(Ping())
        pong = self.wait_for(Pong)
        assert isinstance(pong, Pong)
        return pong.marks


@dataclass
class Writer:
    address: str
    database: Path
    process: subprocess.Popen[bytes]


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Writer]:
    """A writer process on a fresh SQLite file."""
    (tmp_path / "run").mkdir()
    env = {**os.environ, "DATA_DIR": str(tmp_path), "LLAMA_EMBEDDINGS_CONFIG": str(tmp_path / "none.env"),
           "LOG_LEVEL": "WARNING"}
    process = subprocess.Popen([sys.executable, "-m", "workers", "writer"], cwd=PROJECT_ROOT, env=env)
    database = tmp_path / "llama_embeddings.sqlite"
    try:
        yield Writer(f"ipc://{tmp_path / 'run' / 'writer.sock'}", database, process)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.term()


def stored_texts(database: Path) -> set[str]:
    with sqlite_engine(database, read_only=True).connect() as connection:
        return set(connection.execute(select(embeddings.c.text)).scalars())


def test_the_pong_tells_the_stores_marks_after_each_commit_and_delete(writer: Writer,
                                                                      context: zmq.Context[zmq.Socket[bytes]]) -> None:
    gateway = Gateway(context, writer.address)
    assert gateway.marks() == StoreMarks(rows=0, deletions=0)
    gateway.send(Write(batch_id=1, rows=[row("one"), row("two"), row("three")]))
    gateway.wait_for(Ack)
    assert gateway.marks() == StoreMarks(rows=3, deletions=0)
    gateway.send(Delete(request_id=2, target="string", name=text_hash("three")))
    gateway.wait_for(Deleted)
    assert gateway.marks() == StoreMarks(rows=3, deletions=1)  # the deleted row's id is not given out again


def test_each_commit_report_names_the_rows_mark_it_follows_on_from(writer: Writer,
                                                                   context: zmq.Context[zmq.Socket[bytes]]) -> None:
    gateway = Gateway(context, writer.address)
    gateway.marks()  # heard from: it is told of commits from now on
    reports = []
    for batch_id, texts in ((1, ["a", "b"]), (2, ["c"])):
        gateway.send(Write(batch_id=batch_id, rows=[row(text) for text in texts]))
        report = gateway.wait_for(Stored)
        assert isinstance(report, Stored) and report.marks is not None
        reports.append((report.rows_after, report.marks.rows))
    assert reports == [(0, 2), (2, 3)]


def test_a_delete_tells_every_gateway_the_new_deletions_mark(writer: Writer,
                                                             context: zmq.Context[zmq.Socket[bytes]]) -> None:
    deleting, other = Gateway(context, writer.address), Gateway(context, writer.address)
    deleting.send(Write(batch_id=1, rows=[row("doomed")]))
    deleting.wait_for(Ack)
    other.marks()
    deleting.send(Delete(request_id=2, target="string", name=text_hash("doomed")))
    notice = other.wait_for(Stored)
    assert isinstance(notice, Stored) and notice.marks == StoreMarks(rows=1, deletions=1) and notice.models == []


def test_rows_another_gateway_sent_just_after_a_delete_arrived_are_deleted_with_the_rest(
        writer: Writer, context: zmq.Context[zmq.Socket[bytes]]) -> None:
    deleting, other = Gateway(context, writer.address), Gateway(context, writer.address)
    deleting.send(Write(batch_id=1, rows=[row("kept elsewhere", "pets"), row("cat", "pets")]))
    deleting.wait_for(Ack)
    # The other gateway answered "dog" (added to the collection) before the client sent the delete, but its
    # buffer reaches the writer a few milliseconds after the delete does.
    deleting.send(Delete(request_id=2, target="collection", name="pets"))
    time.sleep(0.03)
    other.send(Write(batch_id=1, rows=[row("dog", "pets")]))
    reply = deleting.wait_for(Deleted)
    assert isinstance(reply, Deleted) and sorted(r.model_name for r in reply.rows) == [MODEL] * 3
    assert stored_texts(writer.database) == set()


def test_a_delete_held_when_the_writer_is_told_to_stop_is_still_done_and_answered(
        writer: Writer, context: zmq.Context[zmq.Socket[bytes]]) -> None:
    gateway = Gateway(context, writer.address)
    gateway.send(Write(batch_id=1, rows=[row("doomed")]))
    gateway.wait_for(Ack)
    gateway.send(Delete(request_id=2, target="string", name=text_hash("doomed")))
    time.sleep(0.02)  # received, and held
    writer.process.terminate()
    time.sleep(0.02)
    gateway.send(Ping())  # wakes its loop, which then sees the stop before the hold is over
    reply = gateway.wait_for(Deleted)
    assert isinstance(reply, Deleted) and len(reply.rows) == 1 and not reply.error
    writer.process.wait(timeout=30)
    assert stored_texts(writer.database) == set()
