"""The gateway's link to the writer process: rows go out in batches and stay here until acknowledged.

The writer acknowledges a batch only after it is committed, so a batch whose ACK has not come within
WRITE_ACK_TIMEOUT_SECONDS is sent again (a restarted writer gets everything a killed one had not committed;
inserts are idempotent on (text_hash, model_name)). Every row is journaled before its client is answered
(row_journal.py), so a killed gateway's successor sends what it left. Nothing a client was given is lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import zmq
import zmq.asyncio

from gateway.errors import Unavailable
from gateway.loop_socket import LoopSocket
from gateway.row_journal import RowJournal
from shared.curve import secure_client
from shared.protocol import (
    Ack,
    Delete,
    Deleted,
    DocumentWrite,
    EmbeddingRow,
    Ping,
    Pong,
    ProtocolError,
    Stored,
    StoreMarks,
    Write,
    decode,
    encode,
)
from shared.settings import Settings

log = logging.getLogger(__name__)


def _renumbered(document: DocumentWrite) -> Callable[[int], DocumentWrite]:
    """A predecessor's document write under a batch id of this gateway's."""
    return lambda batch_id: dataclasses.replace(document, batch_id=batch_id)


@dataclass
class _Unacked:
    message: Write | DocumentWrite
    sent_at: float


class WriterLink:
    """Sends rows (in batches) and document writes to the writer, each journaled and re-sent until acknowledged."""

    def __init__(self, settings: Settings, context: zmq.asyncio.Context, index: int = 0) -> None:
        self._settings = settings
        self._index = index
        self._socket = LoopSocket(context, zmq.DEALER, self._receive)
        self._buffer: list[EmbeddingRow] = []
        self._unacked: dict[int, _Unacked] = {}
        self._ids = itertools.count(1)
        self._flush_soon: asyncio.TimerHandle | None = None
        self._journal = RowJournal(journal_dir(settings, index))
        self._tasks: list[asyncio.Task[None]] = []
        self._deletes: dict[int, asyncio.Future[Deleted]] = {}
        self.acknowledged_rows = 0
        self.stored_listeners: list[Callable[[Stored], None]] = []  # told of every commit's text hashes
        self.last_heard: float | None = None  # monotonic time of the writer's last message (readiness)
        self._marks: StoreMarks | None = None  # the store's marks in the writer's last PONG or STORED

    async def start(self) -> None:
        """Connect, read the writer's answers on the loop, start the re-send and ping loops, and hand the writer
        what a predecessor left journaled."""
        secure_client(self._socket.socket, self._settings.writer_connect_address, self._settings.cluster_secret)
        self._socket.socket.connect(self._settings.writer_connect_address)
        self._socket.start()
        self._tasks = [asyncio.create_task(self._resend_loop(), name="writer-resend"),
                       asyncio.create_task(self._ping_loop(), name="writer-ping")]
        # Gateway process 0 also adopts the journals of processes that no longer exist (GATEWAY_PROCESSES lowered).
        orphans = _orphan_journals(self._settings) if self._index == 0 else []
        for journal in [self._journal, *orphans]:
            recovered = journal.recover()
            if recovered.rows:
                self.enqueue(recovered.rows)
            for document in recovered.documents:
                self.send_acknowledged(_renumbered(document))
            self.flush()
            journal.clear_recovered()

    @property
    def unacknowledged_rows(self) -> int:
        """Rows the writer has not acknowledged: those still buffered here and those of batches awaiting their ACK."""
        return len(self._buffer) + sum(len(u.message.rows) for u in self._unacked.values())

    def enqueue(self, rows: list[EmbeddingRow]) -> None:
        """Queue rows for the writer; they leave within DB_FLUSH_INTERVAL_MS or when a batch is full."""
        self._journal.append(rows)
        self._buffer.extend(rows)
        if len(self._buffer) >= self._settings.db_write_batch_size:
            self.flush()
        elif self._flush_soon is None:
            loop = asyncio.get_running_loop()
            self._flush_soon = loop.call_later(self._settings.db_flush_interval_ms / 1000, self.flush)

    def flush(self) -> None:
        """Send the buffered rows now as one batch, their journal sealed under its id; nothing when none are waiting."""
        if self._flush_soon is not None:
            self._flush_soon.cancel()
            self._flush_soon = None
        if not self._buffer:
            return
        message = Write(batch_id=next(self._ids), rows=self._buffer)
        self._buffer = []
        self._journal.seal(message.batch_id)
        self._unacked[message.batch_id] = _Unacked(message, time.monotonic())
        self._send(message)

    def send_acknowledged(self, build: Callable[[int], DocumentWrite]) -> None:
        """Send `build(batch_id)` after the rows queued so far; like a batch, it is re-sent until acknowledged."""
        self.flush()
        message = build(next(self._ids))
        self._journal.record(message.batch_id, message)
        self._unacked[message.batch_id] = _Unacked(message, time.monotonic())
        self._send(message)

    async def delete(self, target: str, name: str, model_name: str = "") -> Deleted:
        """Have the writer delete stored rows (see `Delete`) and return what it removed, after its commit.

        Not journaled: the client is answered only once it is done, and a delete that did not happen is
        reported as such (503), so the client can repeat it (deleting is idempotent).
        """
        self.flush()  # rows queued before the delete reach the writer first, and are deleted with the rest
        request_id = next(self._ids)
        future: asyncio.Future[Deleted] = asyncio.get_running_loop().create_future()
        self._deletes[request_id] = future
        try:
            if self._socket.send(encode(Delete(request_id, target, name, model_name))) is not None:
                raise Unavailable("the writer is not reachable; retry shortly")
            reply = await asyncio.wait_for(future, self._settings.write_ack_timeout_seconds * 2)
        except TimeoutError:
            raise Unavailable("the writer did not answer the delete in time; retry shortly") from None
        finally:
            self._deletes.pop(request_id, None)
        if reply.error:
            raise Unavailable(f"the writer could not delete: {reply.error}")
        return reply

    def _send(self, message: Write | DocumentWrite) -> None:
        if self._socket.send(encode(message)) is not None:
            log.debug("writer not reachable; batch %d will be re-sent", message.batch_id)

    def _receive(self, frames: list[bytes]) -> None:
        try:
            message = decode(frames)
        except ProtocolError as exc:
            log.warning("dropping malformed message from writer: %s", exc)
            return
        self.last_heard = time.monotonic()
        if isinstance(message, Ack) and self._unacked.pop(message.batch_id, None) is not None:
            self.acknowledged_rows += message.committed
            self._journal.forget(message.batch_id)
        elif isinstance(message, Deleted) and message.request_id in self._deletes:
            self._deletes[message.request_id].set_result(message)
        elif isinstance(message, Stored):
            self._marks = message.marks
            for listener in self.stored_listeners:
                listener(message)
        elif isinstance(message, Pong):
            self._marks = message.marks

    async def _resend_loop(self) -> None:
        timeout = self._settings.write_ack_timeout_seconds
        while True:
            await asyncio.sleep(timeout / 2)
            now = time.monotonic()
            for unacked in list(self._unacked.values()):
                if now - unacked.sent_at > timeout:
                    log.warning("batch %d (%d rows) not acknowledged in %.1fs; re-sending",
                                unacked.message.batch_id, len(unacked.message.rows), now - unacked.sent_at)
                    unacked.sent_at = now
                    self._send(unacked.message)

    async def _ping_loop(self) -> None:
        # The writer otherwise speaks only when it has rows to acknowledge; a PONG proves it alive when idle.
        while True:
            if self._socket.send(encode(Ping())) is not None:
                log.debug("writer not reachable for a ping")
            await asyncio.sleep(self._settings.heartbeat_interval_seconds)

    def marks(self) -> StoreMarks | None:
        """The store's marks as the writer last told them, while it is heard from (None: unknown, poll the store)."""
        silent = self.silent_for()
        alive = silent is not None and silent < self._settings.heartbeat_interval_seconds * self._settings.heartbeat_liveness
        return self._marks if alive else None

    def silent_for(self) -> float | None:
        """Seconds since the writer last spoke (None if it never has): alive while under the heartbeat liveness."""
        return None if self.last_heard is None else time.monotonic() - self.last_heard

    async def drain(self, timeout: float) -> bool:
        """Flush and wait for every batch to be acknowledged (at shutdown); False if time ran out."""
        self.flush()
        deadline = time.monotonic() + timeout
        while self._unacked and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return not self._unacked

    async def stop(self) -> None:
        """Stop the loops, close the socket and journal; what is unacknowledged stays journaled for a successor."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._socket.close()
        self._journal.close()


def journal_dir(settings: Settings, index: int) -> Path:
    """Where gateway process `index` journals its rows: `run/journal` for process 0, `run/journal-<index>` after."""
    return settings.run_dir / ("journal" if index == 0 else f"journal-{index}")


def _orphan_journals(settings: Settings) -> list[RowJournal]:
    found = []
    for path in sorted(settings.run_dir.glob("journal-*")):
        suffix = path.name.removeprefix("journal-")
        if suffix.isdigit() and int(suffix) >= settings.gateway_processes:
            found.append(RowJournal(path))
    return found
