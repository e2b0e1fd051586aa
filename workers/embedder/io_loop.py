"""The embedding worker's I/O thread: the one owner of its DEALER to the gateway.

It registers (READY), heartbeats both ways, hands work to the compute thread (decoded, on its inbox) and sends
its answers on (as they came over an inproc PAIR, undecoded), and re-registers when the gateway goes silent
(Paranoid Pirate). Because llama.cpp calls release the GIL, heartbeats keep flowing while a batch runs. Sockets
never cross threads (the ZeroMQ guide's rule), hence the PAIR.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import zmq

from shared.curve import secure_client
from shared.lifecycle import StopFlag
from shared.protocol import (
    Bye,
    Cancel,
    Embed,
    Fatal,
    Heartbeat,
    Kind,
    ProtocolError,
    Ready,
    Reregister,
    Status,
    decode,
    encode,
    kind_of,
)
from shared.settings import Settings
from shared.status_reporter import StatusReporter
from workers.embedder.compute import Finished, Inbox
from workers.embedder.engine import EngineConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerIdentity:
    """Who a worker process is: its model, its worker id (one per spawn) and its pid."""

    model: str
    worker_id: int
    pid: int

    def routing_id(self) -> bytes:
        """The ZeroMQ routing id of the worker's DEALER, `model/worker_id/pid`, by which the gateway knows it."""
        # Fresh per process (pid), so a replacement is never mistaken for the worker it replaces.
        return f"{self.model}/{self.worker_id}/{self.pid}".encode()


def run_io_loop(settings: Settings, stop: StopFlag, identity: WorkerIdentity, ready: Ready, context: zmq.Context,
                inbox: Inbox, pipe: zmq.Socket, config: EngineConfig, compute_alive: Callable[[], bool]) -> None:
    """Serve the gateway until stopped (after BYE, once nothing is in flight) or the compute thread dies."""
    interval = settings.heartbeat_interval_seconds
    reporter = StatusReporter(context, settings.events_address)
    dealer = _connect(context, settings, identity, ready)
    gateway_seen = time.monotonic()
    registered = False  # heard from the gateway since the last (re)connect: it knows this worker
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
                    registered = True
                    if kind_of(frames) not in (Kind.EMBED, Kind.CANCEL, Kind.REREGISTER):
                        continue  # a heartbeat: being heard was all it had to say
                    message = _work(frames)
                    if isinstance(message, Embed):
                        in_flight.add(message.request_id)
                        inbox.put(message)
                    elif isinstance(message, Cancel):
                        in_flight.discard(message.request_id)
                        inbox.put(message)
                    else:
                        dealer.send_multipart(encode(ready))
            if pipe in events:
                while pipe.poll(0):
                    envelope, *frames = pipe.recv_multipart()
                    finished = Finished.unpack(envelope)
                    in_flight.discard(finished.request_id)
                    if kind_of(frames) == Kind.RESULT:
                        counters["requests"] += 1
                        counters["texts"] += finished.texts
                        counters["tokens"] += finished.tokens
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
                registered = False
            if now >= next_status:
                state = "leaving" if leaving_since else ("ready" if registered else "registering")
                reporter.send(Status(role="worker", pid=identity.pid, state=state,
                                     model=identity.model, worker_id=identity.worker_id, counters=dict(counters),
                                     mapped_from=config.model_path, weight_repack=config.weight_repack))
                next_status = now + 1.0
    finally:
        reporter.close()
        dealer.close(linger=0)


def _connect(context: zmq.Context, settings: Settings, identity: WorkerIdentity, ready: Ready) -> zmq.Socket:
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.ROUTING_ID, identity.routing_id())
    dealer.setsockopt(zmq.LINGER, 0)
    secure_client(dealer, settings.worker_connect_address, settings.cluster_secret)
    dealer.connect(settings.worker_connect_address)
    dealer.send_multipart(encode(ready))
    return dealer


def _work(frames: list[bytes]) -> Embed | Cancel | Reregister:
    message = decode(frames)
    if not isinstance(message, (Embed, Cancel, Reregister)):
        raise ProtocolError(f"expected EMBED, CANCEL or REREGISTER, got {type(message).__name__}")
    return message
