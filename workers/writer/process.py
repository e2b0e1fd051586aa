"""The writer's main loop: receive WRITE batches, commit them in groups, acknowledge after commit.

Rows arrive already grouped by the gateway (every DB_FLUSH_INTERVAL_MS); the writer merges whatever arrived within
DB_COMMIT_INTERVAL_MS of the first (or up to DB_WRITE_BATCH_SIZE rows) into one transaction, because much of a
commit's cost is per commit, not per row.
An ACK is sent only after the commit, so the gateway re-sends anything a killed writer had not committed.
A database that stops answering (PostgreSQL restarting, SQLite locked past every retry) does not kill the
writer: it keeps what it holds, retries every second and goes on receiving, so nothing is lost
and the gateway learns of the outage only as ACKs that come late.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field

import zmq
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from shared.curve import check_bind, secure_server, start_authenticator, watch_handshakes
from shared.lifecycle import StopFlag
from shared.protocol import (
    Ack,
    Delete,
    Deleted,
    DocumentWrite,
    EmbeddingRow,
    Ping,
    Pong,
    ProtocolError,
    Status,
    Stored,
    StoreMarks,
    Write,
    decode,
    encode,
)
from shared.settings import Settings
from shared.status_reporter import StatusReporter
from workers.writer.deletion import delete_stored
from workers.writer.documents import write_document
from workers.writer.indexer import Indexer
from workers.writer.store import EmbeddingStore, RetryPolicy

log = logging.getLogger(__name__)


_RETRY_SECONDS = 1.0  # between commits tried while the database does not answer
_DOWN = "the database did not answer; retry shortly"
_DELIVERY_MARGIN_SECONDS = 0.05  # a delete's hold past DB_FLUSH_INTERVAL_MS: a flushed batch's way to the writer


@dataclass
class _Pending:
    batches: list[tuple[bytes, Write | DocumentWrite]] = field(default_factory=list)
    rows: int = 0
    since: float = 0.0
    overdue: bool = False  # a gateway re-sent a batch held here: its ACK is late, so commit without waiting
    _held: set[tuple[bytes, int]] = field(default_factory=set)

    def clear(self) -> None:
        """Forget every batch: they are committed and acknowledged."""
        self.batches, self.rows, self.since, self.overdue, self._held = [], 0, 0.0, False, set()

    def add(self, identity: bytes, message: Write | DocumentWrite) -> None:
        if (identity, message.batch_id) in self._held:
            self.overdue = True  # held once is enough; the re-send says the gateway is waiting
            return
        if not self.batches:
            self.since = time.monotonic()
        self._held.add((identity, message.batch_id))
        self.batches.append((identity, message))
        self.rows += len(message.rows)


@dataclass
class _HeldDeletes:
    """Deletes, each held for a gateway's flush interval after it arrives before it is done.

    Why: a gateway sends the rows it answered within DB_FLUSH_INTERVAL_MS, so rows another gateway process
    answered just before the client sent the delete (the same text added to the doomed collection, say) may
    still be on their way. Held, the delete comes after them: they are committed first and deleted with the
    rest, instead of being stored after the delete the client sent later.
    """

    hold: float
    waiting: list[tuple[float, bytes, Delete]] = field(default_factory=list)  # (due, gateway, message)

    def add(self, identity: bytes, message: Delete) -> None:
        self.waiting.append((time.monotonic() + self.hold, identity, message))

    def next_due(self) -> float | None:
        return self.waiting[0][0] if self.waiting else None

    def due(self, at: float | None = None) -> list[tuple[bytes, Delete]]:
        """The deletes whose hold is over by `at` (default: now), oldest first, taken off the list."""
        if not self.waiting:  # the loop asks on every turn
            return []
        now = time.monotonic() if at is None else at
        ready = [(identity, message) for due, identity, message in self.waiting if due <= now]
        self.waiting = self.waiting[len(ready):]
        return ready


def _database_down(exc: DBAPIError) -> bool:
    """A failure that passes when the database is back, as opposed to a statement that can never succeed."""
    return isinstance(exc, (OperationalError, InterfaceError)) or exc.connection_invalidated


def run_writer(settings: Settings, stop: StopFlag) -> None:
    """The writer process until `stop`: commit the batches that arrive in groups, acknowledge each after commit."""
    store = EmbeddingStore(
        settings.database_url,
        RetryPolicy(settings.max_retries, settings.retry_delay_base_seconds, settings.jitter_factor),
    )
    context = zmq.Context()
    socket = context.socket(zmq.ROUTER)
    socket.setsockopt(zmq.LINGER, 0)
    check_bind("WRITER_BIND_ADDRESS", settings.writer_bind_address, settings.cluster_secret)
    authenticator = start_authenticator(context, settings.cluster_secret)
    secure_server(socket, settings.writer_bind_address, settings.cluster_secret)
    socket.bind(settings.writer_bind_address)
    watch_handshakes(socket, settings.writer_bind_address, settings.cluster_secret, "writer")
    reporter = StatusReporter(context, settings.events_address)
    indexer = Indexer(settings)  # a thread: indexing never delays a commit or its ACK
    indexer.start()
    pending = _Pending()
    deletes = _HeldDeletes(settings.db_flush_interval_ms / 1000 + _DELIVERY_MARGIN_SECONDS)
    gateways = _Gateways(settings.heartbeat_interval_seconds * settings.heartbeat_liveness, store)
    committed = 0
    commit_interval = settings.db_commit_interval_ms / 1000
    next_status = 0.0
    retry_at = 0.0
    down_since: float | None = None
    log.info("writer ready on %s, database %s", settings.writer_bind_address, settings.database_label)
    try:
        while not stop.is_set():
            flush_at = max(pending.since + (0 if pending.overdue else commit_interval), retry_at)
            wake_at = [at for at in (flush_at if pending.batches else None, deletes.next_due()) if at is not None]
            timeout_ms = max(0, int((min(wake_at) - time.monotonic()) * 1000)) if wake_at else 100
            if socket.poll(timeout_ms):
                while True:
                    try:
                        identity, *frames = socket.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    try:
                        message = decode(frames)
                    except ProtocolError as exc:
                        log.warning("dropping malformed message: %s", exc)
                        continue
                    gateways.heard(identity)
                    if isinstance(message, (Write, DocumentWrite)):
                        pending.add(identity, message)
                    elif isinstance(message, Ping):  # the gateway's readiness check
                        socket.send_multipart([identity, *gateways.pong()])
                    elif isinstance(message, Delete):
                        deletes.add(identity, message)
            committed += _answer_deletes(deletes.due(), store, socket, pending, indexer, gateways)
            due = pending.batches and (pending.overdue or pending.rows >= settings.db_write_batch_size
                                       or time.monotonic() - pending.since >= commit_interval)
            if due and time.monotonic() >= retry_at:
                try:
                    committed += _flush(store, socket, pending, indexer, gateways)
                except DBAPIError as exc:
                    if not _database_down(exc):
                        raise
                    if down_since is None:
                        down_since = time.monotonic()
                    log.warning("the database did not take %d rows (%s); holding them, retrying in %.0fs",
                                pending.rows, str(exc).splitlines()[0][:200], _RETRY_SECONDS)
                    retry_at = time.monotonic() + _RETRY_SECONDS
                else:
                    if down_since is not None:
                        log.info("the database answers again after %.1fs", time.monotonic() - down_since)
                        down_since = None
                    pending = _Pending()
            if time.monotonic() >= next_status:
                reporter.send(Status(role="writer", pid=os.getpid(), state="ready",
                                     counters={"committed_rows": committed, "pending_rows": pending.rows}))
                next_status = time.monotonic() + 1.0
        # Stopping: a held delete's hold is cut short rather than the delete dropped.
        committed += _answer_deletes(deletes.due(at=math.inf), store, socket, pending, indexer, gateways)
        if pending.batches:
            try:
                committed += _flush(store, socket, pending, indexer, gateways)
            except DBAPIError as exc:  # not acknowledged: the gateway re-sends them to the next writer
                log.warning("stopping with %d rows the database did not take: %s", pending.rows, exc)
    finally:
        log.info("writer stopping; %d rows committed in this run", committed)
        indexer.stop(timeout=settings.stop_timeout_seconds / 2)
        reporter.close()
        socket.close(linger=0)
        if authenticator is not None:
            authenticator.stop()
        context.term()
        store.close()


def _answer_deletes(held: list[tuple[bytes, Delete]], store: EmbeddingStore, socket: zmq.Socket, pending: _Pending,
                    indexer: Indexer, gateways: _Gateways) -> int:
    """Do each delete and answer its gateway; the new rows committed before them."""
    committed = 0
    for identity, message in held:
        flushed, reply = _delete_after_pending(store, socket, pending, indexer, gateways, message)
        committed += flushed
        socket.send_multipart([identity, *encode(reply)])
    return committed


def _delete_after_pending(store: EmbeddingStore, socket: zmq.Socket, pending: _Pending, indexer: Indexer,
                          gateways: _Gateways, message: Delete) -> tuple[int, Deleted]:
    """Commit what arrived before the delete, so that a text sent and then deleted is deleted rather than stored
    again after, then delete; the new rows committed and the answer."""
    flushed = 0
    if pending.batches:
        try:
            flushed = _flush(store, socket, pending, indexer, gateways)
        except DBAPIError as exc:
            if not _database_down(exc):
                raise
            return 0, Deleted(request_id=message.request_id, found=False, error=_DOWN)
        pending.clear()
    reply = _delete(store, message, indexer)
    if reply.rows:
        gateways.deleted(socket)
    return flushed, reply


def _delete(store: EmbeddingStore, message: Delete, indexer: Indexer) -> Deleted:
    try:
        reply = delete_stored(store, message)
    except DBAPIError as exc:
        # Unlike a batch of rows, a delete the database refuses is not held: the client is told and may repeat it.
        if _database_down(exc):
            return Deleted(request_id=message.request_id, found=False, error=_DOWN)
        log.exception("the database refused a delete (%s %r)", message.target, message.name[:80])
        return Deleted(request_id=message.request_id, found=False,
                       error=f"the database refused it: {str(exc).splitlines()[0][:200]}")
    if reply.rows:
        indexer.rows_committed({row.model_name for row in reply.rows})  # it reads the deletions log
        log.info("deleted %d rows (%s %r)", len(reply.rows), message.target, message.name[:80])
    return reply


class _Gateways:
    """The gateways heard from (every one pings each heartbeat), told of each commit's text hashes and of the
    store's marks after each commit and delete (STORED), and of the marks in each PONG."""

    def __init__(self, forget_after: float, store: EmbeddingStore) -> None:
        self._forget_after = forget_after
        self._last_heard: dict[bytes, float] = {}
        self._store = store
        self.marks = self._read_marks()  # the store's marks after the last commit (None: unknown)

    def heard(self, identity: bytes) -> None:
        self._last_heard[identity] = time.monotonic()

    def pong(self) -> list[bytes]:
        """The answer to a gateway's PING."""
        return encode(Pong(marks=self.marks))

    def committed(self, socket: zmq.Socket, rows: list[EmbeddingRow], marks: StoreMarks | None) -> None:
        """Tell every live gateway the hashes of `rows`, just committed, and where the store is now (`marks`, as
        the commit left them; None: read them)."""
        before = self.marks
        self.marks = marks if marks is not None else self._read_marks()
        self._tell(socket, Stored.of(rows, self.marks, before.rows if before is not None else None))

    def deleted(self, socket: zmq.Socket) -> None:
        """Tell every live gateway that the deletions log has grown."""
        self.marks = self._read_marks()
        self._tell(socket, Stored(models=[], prefixes=[], marks=self.marks))

    def lost_track(self) -> None:
        """A commit failed part-way: until the next one, the marks are unknown (the gateways poll meanwhile)."""
        self.marks = None

    def _read_marks(self) -> StoreMarks | None:
        try:
            return self._store.marks()
        except DBAPIError as exc:
            log.debug("could not read the store's marks: %s", exc)
            return None

    def _tell(self, socket: zmq.Socket, message: Stored) -> None:
        horizon = time.monotonic() - self._forget_after
        self._last_heard = {identity: at for identity, at in self._last_heard.items() if at >= horizon}
        frames = encode(message)
        for identity in self._last_heard:
            try:
                socket.send_multipart([identity, *frames], zmq.NOBLOCK)
            except zmq.ZMQError:  # gone or not reading: its poll of the store brings the rows later
                pass


def _flush(store: EmbeddingStore, socket: zmq.Socket, pending: _Pending, indexer: Indexer | None = None,
           gateways: _Gateways | None = None) -> int:
    try:
        inserted, marks = _commit(store, pending)
    except Exception:
        if gateways is not None:
            gateways.lost_track()  # some of it may be committed: the next STORED must not claim to follow on
        raise
    if inserted and indexer is not None:
        indexer.rows_committed({row.model_name for _, message in pending.batches for row in message.rows})
    if gateways is not None:
        gateways.committed(socket, [row for _, message in pending.batches for row in message.rows], marks)
    for identity, message in pending.batches:
        try:
            socket.send_multipart([identity, *encode(Ack(batch_id=message.batch_id, committed=len(message.rows)))])
        except zmq.ZMQError as exc:  # the gateway went away; it re-sends on reconnect
            log.warning("could not acknowledge batch %d: %s", message.batch_id, exc)
    log.debug("committed %d rows (%d new) from %d batches", sum(len(m.rows) for _, m in pending.batches), inserted,
              len(pending.batches))
    return inserted


def _commit(store: EmbeddingStore, pending: _Pending) -> tuple[int, StoreMarks | None]:
    """Insert the pending rows, then the pending documents; how many rows were new, and the store's marks when
    the rows' insert was the last write (None: read them)."""
    insertion = store.insert_embeddings([row for _, message in pending.batches if isinstance(message, Write)
                                         for row in message.rows])
    inserted, marks = insertion.new, insertion.marks
    for _, message in pending.batches:
        # After the plain rows: a sentence row queued before its document is there to be linked to it.
        if isinstance(message, DocumentWrite):
            inserted += write_document(store, message)
            marks = None  # a document's transaction came after
    return inserted, marks
