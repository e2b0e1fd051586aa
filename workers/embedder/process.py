"""The embedding worker's two threads.

The I/O thread owns the DEALER to the gateway: it registers (READY), heartbeats both ways, forwards work to
the compute thread over an inproc PAIR and results back. Because llama.cpp calls release the GIL, heartbeats
keep flowing while a batch runs. The compute thread owns the engine: it takes everything queued, groups it
by a token budget and posts one RESULT per request as soon as that request's texts are done. Sockets never
cross threads (the ZeroMQ guide's rule), hence the PAIR.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import zmq

from shared.events import StatusReporter
from shared.lifecycle import StopFlag
from shared.protocol import (
    Bye,
    Cancel,
    Embed,
    Failure,
    Fatal,
    Heartbeat,
    Kind,
    ProtocolError,
    Ready,
    Result,
    Status,
    decode,
    encode,
    kind_of,
)
from shared.settings import Settings
from workers.embedder.batcher import Item, plan_groups
from workers.embedder.engine import Engine, EngineConfig

log = logging.getLogger(__name__)
_PIPE = "inproc://compute"


@dataclass(frozen=True)
class WorkerIdentity:
    model: str
    worker_id: int
    pid: int

    def routing_id(self) -> bytes:
        # Fresh per process (pid), so a replacement is never mistaken for the worker it replaces.
        return f"{self.model}/{self.worker_id}/{self.pid}".encode()


@dataclass
class _Job:
    texts_left: int
    vectors: np.ndarray
    token_counts: list[int] = field(default_factory=list)


def run_embedder(settings: Settings, stop: StopFlag, identity: WorkerIdentity, config: EngineConfig) -> None:
    """Load the model, then serve until stopped. Returns after in-flight requests are answered."""
    started = time.monotonic()
    engine = Engine(config)
    log.info("loaded %s from %s in %.2fs (%d-d, %d threads)", identity.model, config.model_path,
             time.monotonic() - started, engine.dimensions, config.threads)
    context = zmq.Context()
    compute_end = context.socket(zmq.PAIR)
    compute_end.bind(_PIPE)
    io_end = context.socket(zmq.PAIR)
    io_end.connect(_PIPE)
    compute = threading.Thread(
        target=_compute_loop, args=(engine, compute_end, settings.batch_window_ms / 1000, config.token_budget),
        name="compute", daemon=True,
    )
    compute.start()
    ready = Ready(model=identity.model, worker_id=identity.worker_id, pid=identity.pid,
                  dimensions=engine.dimensions, max_tokens=engine.max_tokens, credits=settings.worker_credits,
                  threads=config.threads, vocab_size=engine.vocab_size, special_tokens=engine.special_tokens)
    try:
        _io_loop(settings, stop, identity, ready, context, io_end, config.model_path, compute.is_alive)
    finally:
        io_end.send_multipart([b"stop"])
        compute.join(timeout=5)
        io_end.close(linger=0)
        context.term()
        engine.close()


def _compute_loop(engine: Engine, pipe: zmq.Socket, window: float, token_budget: int) -> None:
    cancelled: set[int] = set()
    batch_sizes: list[int] = []  # llama.cpp calls since the last RESULT, reported with the next one
    while True:
        frames = pipe.recv_multipart()
        if frames == [b"stop"]:
            pipe.close(linger=0)
            return
        incoming = [frames]
        deadline = time.monotonic() + window
        # Gather what arrives within the batching window, so concurrent requests share llama.cpp calls.
        while (remaining := deadline - time.monotonic()) > 0 and pipe.poll(int(remaining * 1000) or 1):
            incoming.append(pipe.recv_multipart())
        while pipe.poll(0):
            incoming.append(pipe.recv_multipart())
        jobs: dict[int, _Job] = {}
        items: list[Item] = []
        for message_frames in incoming:
            if message_frames == [b"stop"]:
                pipe.close(linger=0)
                return
            message = decode(message_frames)
            if isinstance(message, Cancel):
                cancelled.add(message.request_id)
            elif isinstance(message, Embed):
                try:
                    if message.token_ids:
                        token_lists = [engine.frame_token_ids(ids) for ids in message.token_ids]
                    else:
                        token_lists = [engine.tokenize(text) for text in message.texts]
                except Exception as exc:  # an untokenisable text or a bad token id must not kill the worker
                    pipe.send_multipart(encode(Failure(request_id=message.request_id, reason=f"tokenizer: {exc}")))
                    continue
                jobs[message.request_id] = _Job(
                    texts_left=len(token_lists),
                    vectors=np.empty((len(token_lists), engine.dimensions), dtype=np.float32),
                    token_counts=[len(t) for t in token_lists],
                )
                items.extend(Item(message.request_id, i, tokens) for i, tokens in enumerate(token_lists))
        for request_id in list(jobs):
            if request_id in cancelled:
                cancelled.discard(request_id)
                del jobs[request_id]
        for request_id, job in jobs.items():
            if job.texts_left == 0:  # a request with no texts is answered at once
                pipe.send_multipart(encode(Result(request_id=request_id, token_counts=[], vectors=job.vectors,
                                                  batch_sizes=batch_sizes)))
                batch_sizes = []
        for planned in plan_groups([it for it in items if it.request_id in jobs], token_budget, engine.max_sequences):
            group = [item for item in planned if item.request_id in jobs]
            if not group:
                continue
            try:
                vectors = engine.embed([item.tokens for item in group])
            except Exception as exc:  # llama.cpp refused this call: fail its requests, keep serving the rest
                log.exception("llama.cpp call of %d sequences failed", len(group))
                for request_id in {item.request_id for item in group}:
                    if jobs.pop(request_id, None) is not None:
                        pipe.send_multipart(encode(Failure(request_id=request_id, reason=f"llama.cpp: {exc}")))
                continue
            batch_sizes.append(len(group))
            for row, item in enumerate(group):
                job = jobs[item.request_id]
                job.vectors[item.index] = vectors[row]
                job.texts_left -= 1
                if job.texts_left == 0:
                    pipe.send_multipart(encode(Result(request_id=item.request_id, token_counts=job.token_counts,
                                                      vectors=job.vectors, batch_sizes=batch_sizes)))
                    batch_sizes = []


def _io_loop(settings: Settings, stop: StopFlag, identity: WorkerIdentity, ready: Ready, context: zmq.Context,
             pipe: zmq.Socket, model_path: str, compute_alive: Callable[[], bool]) -> None:
    interval = settings.heartbeat_interval_seconds
    reporter = StatusReporter(context, settings.events_address)
    dealer = _connect(context, settings, identity, ready)
    gateway_seen = time.monotonic()
    last_sent = time.monotonic()
    in_flight: set[int] = set()
    counters = {"requests": 0, "texts": 0, "tokens": 0}
    leaving_since: float | None = None
    next_status = 0.0
    poller = zmq.Poller()
    poller.register(pipe, zmq.POLLIN)
    poller.register(dealer, zmq.POLLIN)
    try:
        while True:
            now = time.monotonic()
            if stop.is_set() and leaving_since is None:
                leaving_since = now
                dealer.send_multipart(encode(Bye()))
                log.info("stopping: finishing %d requests in flight", len(in_flight))
            if leaving_since is not None and (not in_flight or now - leaving_since > settings.stop_timeout_seconds):
                return
            if not compute_alive():
                # Heartbeats alone would hide a dead compute thread: say FATAL so that the gateway requeues
                # what this worker holds, and exit so that the supervisor starts a replacement.
                dealer.send_multipart(encode(Fatal(reason="the compute thread died")))
                time.sleep(0.2)  # the socket closes with linger 0: give the FATAL time to leave
                raise RuntimeError("the compute thread died")
            events = dict(poller.poll(int(interval * 250)))
            if dealer in events:
                while dealer.poll(0):
                    frames = dealer.recv_multipart()
                    gateway_seen = time.monotonic()
                    kind = kind_of(frames)
                    if kind in (Kind.EMBED, Kind.CANCEL):
                        request_id = _request_id(frames)
                        if kind == Kind.EMBED:
                            in_flight.add(request_id)
                        else:
                            in_flight.discard(request_id)
                        pipe.send_multipart(frames)
                    elif kind == Kind.REREGISTER:
                        dealer.send_multipart(encode(ready))
            if pipe in events:
                while pipe.poll(0):
                    frames = pipe.recv_multipart()
                    message = decode(frames)
                    if isinstance(message, (Result, Failure)):
                        in_flight.discard(message.request_id)
                    if isinstance(message, Result):
                        counters["requests"] += 1
                        counters["texts"] += len(message.token_counts)
                        counters["tokens"] += sum(message.token_counts)
                    dealer.send_multipart(frames)
                    last_sent = time.monotonic()
            now = time.monotonic()
            if now - last_sent >= interval:
                dealer.send_multipart(encode(Heartbeat()))
                last_sent = now
            if now - gateway_seen > interval * settings.heartbeat_liveness and leaving_since is None:
                # The gateway is gone or restarted: a fresh socket re-registers (Paranoid Pirate).
                log.warning("gateway silent for %.1fs; reconnecting", now - gateway_seen)
                poller.unregister(dealer)
                dealer.close(linger=0)
                dealer = _connect(context, settings, identity, ready)
                poller.register(dealer, zmq.POLLIN)
                gateway_seen = now
            if now >= next_status:
                reporter.send(Status(role="worker", pid=identity.pid, state="leaving" if leaving_since else "ready",
                                     model=identity.model, worker_id=identity.worker_id, counters=dict(counters),
                                     detail={"mapped_from": model_path, "threads": ready.threads}))
                next_status = now + 1.0
    finally:
        reporter.close()
        dealer.close(linger=0)


def _connect(context: zmq.Context, settings: Settings, identity: WorkerIdentity, ready: Ready) -> zmq.Socket:
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.ROUTING_ID, identity.routing_id())
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(settings.worker_connect_address)
    dealer.send_multipart(encode(ready))
    return dealer


def _request_id(frames: list[bytes]) -> int:
    message = decode(frames)
    if not isinstance(message, (Embed, Cancel)):
        raise ProtocolError("expected EMBED or CANCEL")
    return message.request_id
