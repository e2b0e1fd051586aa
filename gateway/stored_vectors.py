"""Looks up stored vectors on one reader thread that answers every caller waiting at that moment in one query.

Why: under load, every uncached request asks SQLite for its text first, and almost always misses. Done one
request at a time through `asyncio.to_thread` and SQLAlchemy (pool checkout, the BEGIN listener, statement
compilation, rollback on return), that lookup measured as half of the gateway's CPU. Here the requests that
pile up while a query runs are answered by the next single query, on one connection kept open, so the cost
per request shrinks as concurrency grows; an idle service still answers a lone request at once (no waiting
to collect a batch).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from shared.schema import parameter_chunks


class DatabaseConnection(Protocol):
    """A DBAPI connection in autocommit mode (each SELECT its own read transaction, so new rows show up)."""

    def cursor(self) -> Any:
        """A new DBAPI cursor; the reader runs a batch's SELECTs on one and closes it."""

    def close(self) -> None:
        """Close the connection: the reader does after an error (to open the file afresh) and when it stops."""


class StoredVectorsClosed(RuntimeError):
    """The reader was closed before it answered."""


Found = dict[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class _Lookup:
    model: str
    hashes: list[str]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Found]


class StoredVectorReader:
    """`await read(model, hashes)` from any event loop; `close()` from any thread (again is harmless)."""

    def __init__(self, connect: Callable[[], DatabaseConnection], name: str = "stored-vectors",
                 placeholder: str = "?") -> None:
        self._connect = connect  # called on the reader thread, lazily: the database may not exist yet
        self._placeholder = placeholder  # the DBAPI's: "?" (sqlite3) or "%s" (psycopg)
        self._queue: queue.SimpleQueue[_Lookup | None] = queue.SimpleQueue()
        self._closed = False
        # Makes "not closed, then queued" atomic against close(), so nothing is queued after the stop mark.
        self._closing = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    async def read(self, model: str, hashes: list[str]) -> Found:
        """The vectors stored for those of `hashes` that are in the database, by hash."""
        if not hashes:
            return {}
        loop = asyncio.get_running_loop()
        lookup = _Lookup(model, hashes, loop, loop.create_future())
        with self._closing:
            if self._closed:
                raise StoredVectorsClosed("the stored-vector reader is closed")
            self._queue.put(lookup)
        return await lookup.future

    @property
    def closed(self) -> bool:
        """True once close() has begun: no lookup queued from then on will be answered."""
        with self._closing:
            return self._closed

    def close(self) -> None:
        """Stops the thread after it answers the query in progress; lookups still queued fail."""
        with self._closing:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)  # the stop mark: everything queued before it is answered or failed
        self._thread.join()

    def _run(self) -> None:
        connection: DatabaseConnection | None = None
        try:
            while True:
                lookups, stopping = self._take_pending()
                if stopping:
                    _answer([(lookup, StoredVectorsClosed("the stored-vector reader is closed")) for lookup in lookups])
                    return
                try:
                    if connection is None:
                        connection = self._connect()
                    answers: Sequence[tuple[_Lookup, Found | BaseException]] = _look_up(connection, lookups, self._placeholder)
                except Exception as exc:  # every error goes to the callers; the thread lives on for the next ones
                    answers = [(lookup, exc) for lookup in lookups]
                    if connection is not None:
                        # Opened afresh for the next lookups: a replaced or damaged file should not stick.
                        _close_quietly(connection)
                        connection = None
                _answer(answers)
        finally:
            if connection is not None:
                _close_quietly(connection)

    def _take_pending(self) -> tuple[list[_Lookup], bool]:
        """Everything queued so far (waiting for the first one), and whether close() was among it."""
        lookups: list[_Lookup] = []
        stopping = False
        item = self._queue.get()
        while True:
            if item is None:
                stopping = True
            else:
                lookups.append(item)
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return lookups, stopping


def _look_up(connection: DatabaseConnection, lookups: list[_Lookup], placeholder: str) -> list[tuple[_Lookup, Found]]:
    """One query per model per parameter chunk of distinct hashes, for all of `lookups` together."""
    by_model: dict[str, dict[str, None]] = defaultdict(dict)
    for lookup in lookups:
        by_model[lookup.model].update(dict.fromkeys(lookup.hashes))
    stored: dict[str, Found] = {}
    cursor = connection.cursor()
    try:
        for model, wanted in by_model.items():
            found: Found = {}
            if placeholder == "%s":
                # PostgreSQL: one array parameter makes one statement text, which psycopg prepares once (its
                # prepare_threshold); an IN list of varying length would be parsed and planned every time.
                cursor.execute("SELECT text_hash, embedding FROM embeddings WHERE model_name = %s AND "
                               "text_hash = ANY(%s)", [model, list(wanted)])
                rows = cursor.fetchall()
            else:
                rows = []
                for chunk in parameter_chunks(list(wanted)):
                    cursor.execute(f"SELECT text_hash, embedding FROM embeddings WHERE model_name = ? AND "
                                   f"text_hash IN ({','.join('?' * len(chunk))})", [model, *chunk])
                    rows += cursor.fetchall()
            for text_hash, blob in rows:
                found[text_hash] = np.frombuffer(blob, dtype=np.float32)
            stored[model] = found
    finally:
        cursor.close()
    answers = []
    for lookup in lookups:
        found = stored[lookup.model]
        answers.append((lookup, {text_hash: found[text_hash] for text_hash in lookup.hashes if text_hash in found}))
    return answers


def _answer(answers: Sequence[tuple[_Lookup, Found | BaseException]]) -> None:
    """One wake-up per event loop for the whole batch, not one per caller."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Lookup, Found | BaseException]]] = defaultdict(list)
    for lookup, outcome in answers:
        by_loop[lookup.loop].append((lookup, outcome))
    for loop, batch in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, batch)
        except RuntimeError:
            pass  # that loop is closed: nobody is left to await its futures


def _settle(batch: list[tuple[_Lookup, Found | BaseException]]) -> None:
    for lookup, outcome in batch:
        if lookup.future.done():  # the caller was cancelled
            continue
        if isinstance(outcome, BaseException):
            lookup.future.set_exception(outcome)
        else:
            lookup.future.set_result(outcome)


def _close_quietly(connection: DatabaseConnection) -> None:
    try:
        connection.close()
    except Exception:  # closing a broken connection may fail too; it is dropped either way
        pass
