"""The embedding worker's compute thread: it owns the engine and feeds it from one queue of texts.

Work arrives from the I/O thread as decoded messages on a queue (the I/O thread had to decode an EMBED to
learn its request id, so it is decoded once). Between two llama.cpp calls the thread takes in everything that
has arrived, so new requests ride in the next call (continuous batching, see batcher.py), and each request
ends as soon as its last text is done: the requests one call finishes go back to each gateway in one RESULTS.
Answers go back over an inproc PAIR (the I/O thread waits on ZeroMQ sockets, and sockets never cross
threads), encoded once for the wire, behind a small `Finished` frame that tells the I/O thread what it counts,
so it forwards the message without decoding it. A TOKENIZE (POST /tokenize) is answered as soon as it is taken
in, with no llama.cpp call.
"""

from __future__ import annotations

import logging
import queue
import struct
import time
from dataclasses import dataclass, field

import numpy as np
import zmq

from shared.protocol import Cancel, Embed, Failure, Results, Tokenize, Tokens, encode
from workers.embedder.batcher import Item, TextQueue
from workers.embedder.engine import Engine

log = logging.getLogger(__name__)
_FINISHED = struct.Struct("<qqq")  # gateway, texts, tokens; then the request ids


@dataclass(frozen=True)
class Work:
    """An EMBED, TOKENIZE or CANCEL as the I/O thread hands it over, with the gateway link it came on (its answer
    goes back there; request ids are unique per gateway only)."""

    gateway: int
    message: Embed | Tokenize | Cancel


Inbox = queue.SimpleQueue[Work | None]  # None: stop
_Key = tuple[int, int]  # (gateway, request id)


@dataclass(frozen=True)
class Finished:
    """In front of every answer on the pipe: the gateway and requests it ends and, for RESULTS, what they held."""

    gateway: int
    request_ids: tuple[int, ...]
    texts: int = 0
    tokens: int = 0

    def pack(self) -> bytes:
        """Gateway, texts, tokens and the request ids as little-endian 64-bit integers."""
        ids = struct.pack(f"<{len(self.request_ids)}q", *self.request_ids)
        return _FINISHED.pack(self.gateway, self.texts, self.tokens) + ids

    @classmethod
    def unpack(cls, frame: bytes) -> Finished:
        """The Finished that a frame made by pack() holds."""
        gateway, texts, tokens = _FINISHED.unpack_from(frame)
        ids = struct.unpack_from(f"<{(len(frame) - _FINISHED.size) // 8}q", frame, _FINISHED.size)
        return cls(gateway, ids, texts, tokens)


@dataclass
class _Job:
    texts_left: int
    vectors: np.ndarray
    token_counts: list[int] = field(default_factory=list)


class ComputeLoop:
    """Owns the engine: `run` on the compute thread until None arrives in the inbox."""

    def __init__(self, engine: Engine, inbox: Inbox, pipe: zmq.Socket, token_budget: int) -> None:
        self._engine = engine
        self._inbox = inbox
        self._pipe = pipe
        self._queue = TextQueue(token_budget, engine.max_sequences)
        self._jobs: dict[_Key, _Job] = {}
        self._batch_sizes: list[int] = []  # llama.cpp calls since the last RESULTS, reported with the next one

    def run(self, window: float) -> None:
        """Serve until the I/O thread puts None in the inbox. `window`: how long an idle loop gathers before a call."""
        try:
            while True:
                if not self._queue:
                    if not self._take(self._inbox.get()):
                        return
                    deadline = time.monotonic() + window
                    while (remaining := deadline - time.monotonic()) > 0:
                        try:
                            message = self._inbox.get(timeout=remaining)
                        except queue.Empty:
                            break
                        if not self._take(message):
                            return
                while True:
                    try:
                        message = self._inbox.get_nowait()
                    except queue.Empty:
                        break
                    if not self._take(message):
                        return
                self._compute(self._queue.next_group(self._jobs))
        finally:
            self._pipe.close(linger=0)

    def _take(self, work: Work | None) -> bool:
        """Admit one message; False for the stop mark."""
        if work is None:
            return False
        if isinstance(work.message, Cancel):
            self._jobs.pop((work.gateway, work.message.request_id), None)  # next_group drops its queued texts
        elif isinstance(work.message, Tokenize):
            self._tokenize(work.gateway, work.message)
        else:
            self._admit(work.gateway, work.message)
        return True

    def _admit(self, gateway: int, message: Embed) -> None:
        try:
            if message.token_ids:
                token_lists = [self._engine.frame_token_ids(ids) for ids in message.token_ids]
            else:
                token_lists = [self._engine.tokenize(text) for text in message.texts]
        except Exception as exc:  # an untokenisable text or a bad token id must not kill the worker
            self._send(gateway, Failure(request_id=message.request_id, reason=f"tokenizer: {exc}"))
            return
        job = _Job(texts_left=len(token_lists), token_counts=[len(t) for t in token_lists],
                   vectors=np.empty((len(token_lists), self._engine.dimensions), dtype=np.float32))
        key = (gateway, message.request_id)
        if not token_lists:  # a request with no texts is answered at once
            self._send_results(gateway, [(message.request_id, job)])
            return
        self._jobs[key] = job
        self._queue.extend(Item(key, i, tokens) for i, tokens in enumerate(token_lists))

    def _tokenize(self, gateway: int, message: Tokenize) -> None:
        # Answered at once, between two llama.cpp calls: it costs what admitting an EMBED of the same texts
        # costs (tokenizing is all _admit does too), and the engine is this thread's alone.
        try:
            ids = [self._engine.token_ids(text, message.add_special_tokens) for text in message.texts]
        except Exception as exc:  # an untokenisable text must not kill the worker
            self._send(gateway, Failure(request_id=message.request_id, reason=f"tokenizer: {exc}"))
            return
        self._send(gateway, Tokens(request_id=message.request_id, token_ids=ids))

    def _compute(self, group: list[Item]) -> None:
        if not group:
            return
        try:
            vectors = self._engine.embed([item.tokens for item in group])
        except Exception as exc:  # llama.cpp refused this call: fail its requests, keep serving the rest
            log.exception("llama.cpp call of %d sequences failed", len(group))
            for key in dict.fromkeys(item.request for item in group):
                if self._jobs.pop(key, None) is not None:
                    self._send(key[0], Failure(request_id=key[1], reason=f"llama.cpp: {exc}"))
            return
        self._batch_sizes.append(len(group))
        done: dict[int, list[tuple[int, _Job]]] = {}  # per gateway: the requests this call finished
        for row, item in enumerate(group):
            key = item.request
            job = self._jobs.get(key)
            if job is None:  # cancelled while queued
                continue
            job.vectors[item.index] = vectors[row]
            job.texts_left -= 1
            if job.texts_left == 0:
                del self._jobs[key]
                done.setdefault(key[0], []).append((key[1], job))
        for gateway, jobs in done.items():
            self._send_results(gateway, jobs)

    def _send_results(self, gateway: int, jobs: list[tuple[int, _Job]]) -> None:
        """One RESULTS to `gateway` for these finished (request id, job) pairs."""
        vectors = jobs[0][1].vectors if len(jobs) == 1 else np.concatenate([job.vectors for _, job in jobs])
        token_counts = [count for _, job in jobs for count in job.token_counts]
        message = Results(request_ids=[request_id for request_id, _ in jobs], rows=[len(job.vectors) for _, job in jobs],
                          token_counts=token_counts, vectors=vectors, batch_sizes=self._batch_sizes)
        self._batch_sizes = []
        finished = Finished(gateway, tuple(message.request_ids), len(token_counts), sum(token_counts))
        self._pipe.send_multipart([finished.pack(), *encode(message)])

    def _send(self, gateway: int, message: Failure | Tokens) -> None:
        self._pipe.send_multipart([Finished(gateway, (message.request_id,)).pack(), *encode(message)])
