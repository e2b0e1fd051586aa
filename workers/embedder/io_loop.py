"""The embedding worker's I/O thread: the one owner of its DEALERs, one per gateway process.

It registers (READY) with every gateway process, heartbeats both ways, hands work to the compute thread
(decoded, on its inbox) and sends its answers on (as they came over an inproc PAIR, undecoded) to the gateway
that asked, and re-registers with a gateway that goes silent (Paranoid Pirate). Because llama.cpp calls release
the GIL, heartbeats keep flowing while a batch runs. Sockets never cross threads (the ZeroMQ guide's rule),
hence the PAIR.
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
    Tokenize,
    decode,
    encode,
    kind_of,
)
from shared.settings import Settings
from shared.status_reporter import StatusReporter
from workers.embedder.compute import Finished, Inbox, Work
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


@dataclass
class _GatewayLink:
    """One gateway process as this worker sees it: its DEALER, when each side last heard the other, and whether
    it has answered since the last (re)connect (then it knows this worker)."""

    index: int
    address: str
    dealer: zmq.Socket
    seen: float
    last_sent: float
    registered: bool = False


def run_io_loop(settings: Settings, stop: StopFlag, identity: WorkerIdentity, ready: Ready, context: zmq.Context,
                inbox: Inbox, pipe: zmq.Socket, config: EngineConfig, compute_alive: Callable[[], bool]) -> None:
    """Serve every gateway process until stopped (after BYE, once nothing is in flight) or the compute thread dies.

    With GATEWAY_PROCESSES > 1 the worker holds one DEALER per gateway (each gateway's broker hands out its
    own credits), and the compute thread batches what all of them send together.
    """
    interval = settings.heartbeat_interval_seconds
    reporter = StatusReporter(context, settings.events_address)
    now = time.monotonic()
    links = [_GatewayLink(index, address, _connect(context, settings, address, identity, ready), now, now)
             for index, address in enumerate(settings.worker_connect_addresses)]
    by_dealer = {link.dealer: link for link in links}
    in_flight: set[tuple[int, int]] = set()  # (gateway, request id)
    counters = {"requests": 0, "texts": 0, "tokens": 0}
    leaving_since: float | None = None
    next_status = 0.0
    poller = zmq.Poller()
    poller.register(pipe, zmq.POLLIN)
    for link in links:
        poller.register(link.dealer, zmq.POLLIN)
    try:
        while True:
            now = time.monotonic()
            if stop.is_set() and leaving_since is None:
                leaving_since = now
                for link in links:
                    link.dealer.send_multipart(encode(Bye()))
                log.info("stopping: finishing %d requests in flight", len(in_flight))
            if leaving_since is not None and (not in_flight or now - leaving_since > settings.stop_timeout_seconds):
                return
            if not compute_alive():
                # Heartbeats alone would hide a dead compute thread: say FATAL so that the gateways requeue
                # what this worker holds, and exit so that the supervisor starts a replacement.
                for link in links:
                    link.dealer.send_multipart(encode(Fatal(reason="the compute thread died")))
                time.sleep(0.2)  # the sockets close with linger 0: give the FATAL time to leave
                raise RuntimeError("the compute thread died")
            events = dict(poller.poll(int(interval * 250)))
            for dealer in [d for d in events if d is not pipe]:
                link = by_dealer[dealer]
                while dealer.poll(0):
                    frames = dealer.recv_multipart()
                    link.seen = time.monotonic()
                    link.registered = True
                    if kind_of(frames) not in (Kind.EMBED, Kind.TOKENIZE, Kind.CANCEL, Kind.REREGISTER):
                        continue  # a heartbeat: being heard was all it had to say
                    message = _work(frames)
                    if isinstance(message, (Embed, Tokenize)):
                        in_flight.add((link.index, message.request_id))
                        inbox.put(Work(link.index, message))
                    elif isinstance(message, Cancel):
                        in_flight.discard((link.index, message.request_id))
                        inbox.put(Work(link.index, message))
                    else:
                        dealer.send_multipart(encode(ready))
            if pipe in events:
                while pipe.poll(0):
                    envelope, *frames = pipe.recv_multipart()
                    finished = Finished.unpack(envelope)
                    for request_id in finished.request_ids:
                        in_flight.discard((finished.gateway, request_id))
                    if kind_of(frames) == Kind.RESULTS:
                        counters["requests"] += len(finished.request_ids)
                        counters["texts"] += finished.texts
                        counters["tokens"] += finished.tokens
                    link = links[finished.gateway]
                    link.dealer.send_multipart(frames)
                    link.last_sent = time.monotonic()
            now = time.monotonic()
            for link in links:
                if now - link.last_sent >= interval:
                    link.dealer.send_multipart(encode(Heartbeat()))
                    link.last_sent = now
                if now - link.seen > interval * settings.heartbeat_liveness and leaving_since is None:
                    # The gateway is gone or restarted: a fresh socket re-registers (Paranoid Pirate).
                    log.warning("gateway %s silent for %.1fs; reconnecting", link.address, now - link.seen)
                    poller.unregister(link.dealer)
                    del by_dealer[link.dealer]
                    link.dealer.close(linger=0)
                    link.dealer = _connect(context, settings, link.address, identity, ready)
                    by_dealer[link.dealer] = link
                    poller.register(link.dealer, zmq.POLLIN)
                    link.seen, link.registered = now, False
            if now >= next_status:
                state = "leaving" if leaving_since else ("ready" if all(g.registered for g in links) else "registering")
                reporter.send(Status(role="worker", pid=identity.pid, state=state,
                                     model=identity.model, worker_id=identity.worker_id, counters=dict(counters),
                                     mapped_from=config.model_path, weight_repack=config.weight_repack))
                next_status = now + 1.0
    finally:
        reporter.close()
        for link in links:
            link.dealer.close(linger=0)


def _connect(context: zmq.Context, settings: Settings, address: str, identity: WorkerIdentity,
             ready: Ready) -> zmq.Socket:
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.ROUTING_ID, identity.routing_id())
    dealer.setsockopt(zmq.LINGER, 0)
    secure_client(dealer, address, settings.cluster_secret)
    dealer.connect(address)
    dealer.send_multipart(encode(ready))
    return dealer


def _work(frames: list[bytes]) -> Embed | Tokenize | Cancel | Reregister:
    message = decode(frames)
    if not isinstance(message, (Embed, Tokenize, Cancel, Reregister)):
        raise ProtocolError(f"expected EMBED, TOKENIZE, CANCEL or REREGISTER, got {type(message).__name__}")
    return message
