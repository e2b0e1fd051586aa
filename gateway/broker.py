"""The gateway as a broker between HTTP requests and embedding workers (Majordomo with credits).

Workers connect DEALERs to our ROUTER and announce themselves with READY; only then are they given work,
never more requests at once than their credits, the least loaded first. Each model has a bounded FIFO
queue. A worker that goes silent for HEARTBEAT_LIVENESS intervals, says FATAL, or cannot be sent to is
lost: its requests go back to the front of the queue once, then fail. Every request has a deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import zmq
import zmq.asyncio
from zmq.auth.thread import ThreadAuthenticator

from gateway.errors import GatewayError, GatewayTimeout, Overloaded, Unavailable, WorkerFailed
from gateway.loop_socket import LoopSocket
from shared.curve import check_bind, secure_server, start_authenticator, watch_handshakes
from shared.model_health import answers_at_once, no_worker_reason, retry_after
from shared.protocol import (
    Answer,
    Bye,
    Cancel,
    Embed,
    Failure,
    Fatal,
    Heartbeat,
    Message,
    ModelHealth,
    ProtocolError,
    Ready,
    RegisteredWorker,
    Reregister,
    Results,
    Tokenize,
    Tokens,
    decode,
    encode,
)
from shared.settings import Settings

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 2  # the first try and one retry on another worker


@dataclass
class Job:
    """One request for vectors (or token ids): queued for its model, or in flight on `worker`; its outcome is set
    on `future`."""

    request_id: int
    model: str
    texts: list[str]
    future: asyncio.Future[Answer | Tokens]
    queued_at: float
    attempts: int = 0
    worker: bytes | None = None
    token_ids: list[list[int]] = field(default_factory=list)  # instead of texts (see Embed)
    add_special_tokens: bool | None = None  # set: a TOKENIZE of `texts` (POST /tokenize) instead of an EMBED

    def message(self) -> Embed | Tokenize:
        """What the worker is sent for this job."""
        if self.add_special_tokens is not None:
            return Tokenize(request_id=self.request_id, texts=self.texts, add_special_tokens=self.add_special_tokens)
        return Embed(request_id=self.request_id, texts=self.texts, token_ids=self.token_ids)


@dataclass
class WorkerState:
    """A registered worker as the broker tracks it: its READY, when it was last heard, the requests it holds."""

    identity: bytes
    ready: Ready
    last_seen: float
    in_flight: dict[int, Job] = field(default_factory=dict)
    leaving: bool = False

    @property
    def free_credits(self) -> int:
        """How many more requests the worker may be given now; none once it has said BYE."""
        return 0 if self.leaving else self.ready.credits - len(self.in_flight)


@dataclass
class ModelCounters:
    """Counts per model since the gateway started, which the metrics read at each scrape."""

    requests: int = 0
    texts: int = 0
    retried: int = 0
    failed: int = 0
    workers_lost: int = 0
    # For the metrics: workers that joined (start, restart, scale up) or left after BYE, tokens embedded,
    # sizes of llama.cpp calls.
    workers_registered: int = 0
    workers_left: int = 0
    tokens: int = 0
    batch_sizes: Counter[int] = field(default_factory=Counter)


class Broker:
    """Owns the ROUTER socket; all methods run on the event loop thread."""

    def __init__(self, settings: Settings, context: zmq.asyncio.Context,
                 health: Callable[[str], ModelHealth | None] = lambda _model: None, bind_address: str = "",
                 load_on_demand: Callable[[str], Awaitable[None]] | None = None) -> None:
        self._settings = settings
        self._address = bind_address or settings.worker_bind_address  # gateway process i's own (GATEWAY_PROCESSES)
        self._health = health  # the supervisor's word on a model without workers (supervisor_view.py)
        self._load_on_demand = load_on_demand  # LOAD_ON_DEMAND: gateway/on_demand.py
        self._socket = LoopSocket(context, zmq.ROUTER, self._receive)
        self._socket.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a plain ROUTER drops unroutable messages silently
        self._socket.socket.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self._context = context
        self._authenticator: ThreadAuthenticator | None = None
        self._workers: dict[bytes, WorkerState] = {}
        self._queues: dict[str, deque[Job]] = {}
        self._ids = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self.counters: dict[str, ModelCounters] = {}
        self.last_ready: dict[str, Ready] = {}  # per model, kept after its workers are gone (input limits)
        # Set when a worker joins or leaves: the gateway tells the supervisor at once rather than at its next
        # second's STATUS (a worker serves, for the supervisor, once every gateway has it registered).
        self.registry_changed = asyncio.Event()

    async def start(self) -> None:
        """Bind the workers' ROUTER and start the receive and heartbeat loops."""
        address, secret = self._address, self._settings.cluster_secret
        check_bind("WORKER_BIND_ADDRESS", address, secret)
        # The authenticator's sockets are blocking ones in a thread, on the same libzmq context (inproc ZAP).
        self._authenticator = start_authenticator(zmq.Context.shadow(self._context.underlying), secret)
        secure_server(self._socket.socket, address, secret)
        self._socket.socket.bind(address)
        watch_handshakes(self._socket.socket, address, secret, "gateway")
        self._socket.start()
        self._tasks = [asyncio.create_task(self._heartbeat_loop(), name="broker-heartbeat")]
        log.info("broker listening for workers on %s", self._address)

    async def stop(self) -> None:
        """Stop the loops, fail every queued or in-flight request with 503, and close the socket."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for job in self._all_jobs():
            if not job.future.done():
                job.future.set_exception(Unavailable("the gateway is shutting down"))
        self._socket.close()
        if self._authenticator is not None:
            self._authenticator.stop()

    def _counters(self, model: str) -> ModelCounters:
        # Not setdefault(model, ModelCounters()): that builds and drops a ModelCounters (and its Counter) on
        # every request and every result.
        counters = self.counters.get(model)
        if counters is None:
            counters = self.counters[model] = ModelCounters()
        return counters

    def live_workers(self, model: str) -> list[WorkerState]:
        """The registered workers of `model` that have not said BYE."""
        return [w for w in self._workers.values() if w.ready.model == model and not w.leaving]

    def has_live_worker(self, model: str) -> bool:
        """True while `model` has a registered worker that has not said BYE."""
        return any(w.ready.model == model and not w.leaving for w in self._workers.values())

    def queue_depth(self, model: str) -> int:
        """How many requests of `model` are waiting for a worker."""
        return len(self._queues.get(model, ()))

    async def embed(self, model: str, texts: list[str], token_ids: list[list[int]] | None = None) -> Answer:
        """Vectors for `texts` (or `token_ids`) from a worker of `model`; raises a GatewayError subclass on failure."""
        answer = await self._submit(model, texts, token_ids or [], None)
        assert isinstance(answer, Answer)  # the worker answers an EMBED in a RESULTS (a TOKENS would be a bug there)
        return answer

    async def tokenize(self, model: str, texts: list[str], add_special_tokens: bool) -> Tokens:
        """Each text's token ids in the tokenizer of `model`, from one of its workers (the tokenizer lives there).

        Queued, credited, retried and timed out as an embed is: a worker answers it between two llama.cpp calls.
        """
        answer = await self._submit(model, texts, [], add_special_tokens)
        assert isinstance(answer, Tokens)  # the worker answers a TOKENIZE with TOKENS
        return answer

    async def _submit(self, model: str, texts: list[str], token_ids: list[list[int]],
                      add_special_tokens: bool | None) -> Answer | Tokens:
        queue = self._queues.setdefault(model, deque())
        if not self.live_workers(model):
            health = self._health(model)
            if self._load_on_demand is not None and health is not None and health.desired == 0 \
                    and not health.failed_reason:
                try:
                    await self._load_on_demand(model)
                except GatewayError:
                    self._counters(model).failed += 1
                    raise
                health = None  # loaded: the report that said 0 workers is out of date
            if health is not None and answers_at_once(health, self._settings.worker_wait_seconds):
                # No worker can come within WORKER_WAIT_SECONDS (failed, scaled to 0, a long backoff): say so now.
                self._counters(model).failed += 1
                raise _no_worker_error(model, health)
        if len(queue) >= self._settings.max_queue_per_model:
            raise Overloaded(f"the queue of model {model!r} is full ({len(queue)} requests); retry shortly")
        loop = asyncio.get_running_loop()
        job = Job(next(self._ids), model, texts, loop.create_future(), time.monotonic(), token_ids=token_ids,
                  add_special_tokens=add_special_tokens)
        if add_special_tokens is None:  # the counters are of embedding (a tokenize embeds nothing)
            counters = self._counters(model)
            counters.requests += 1
            counters.texts += len(texts) + len(job.token_ids)
        queue.append(job)
        self._dispatch(model)
        # One timer on the job's own future rather than wait_for(shield(...)), which adds a future, a waiter
        # and their callbacks to every request.
        deadline = loop.call_later(self._settings.request_timeout_seconds, self._expire, job)
        try:
            return await job.future
        except asyncio.CancelledError:
            self._abandon(job)  # the client went away: free the worker's credit
            raise
        finally:
            deadline.cancel()

    def _expire(self, job: Job) -> None:
        if not job.future.done():
            timeout = self._settings.request_timeout_seconds
            job.future.set_exception(GatewayTimeout(f"no result within REQUEST_TIMEOUT_SECONDS={timeout:g}"))
            self._abandon(job)

    def _abandon(self, job: Job) -> None:
        queue = self._queues.get(job.model)
        if queue is not None and job in queue:
            queue.remove(job)
        worker = self._workers.get(job.worker) if job.worker else None
        if worker is not None and worker.in_flight.pop(job.request_id, None) is not None:
            self._send(worker.identity, Cancel(request_id=job.request_id))
            self._dispatch(job.model)

    def _dispatch(self, model: str) -> None:
        queue = self._queues.get(model)
        while queue:
            candidates = [w for w in self.live_workers(model) if w.free_credits > 0]
            if not candidates:
                return
            worker = min(candidates, key=lambda w: len(w.in_flight))
            job = queue.popleft()
            if job.future.done():
                continue
            job.worker = worker.identity
            job.attempts += 1
            worker.in_flight[job.request_id] = job
            if not self._send(worker.identity, job.message()):
                return  # _send declared the worker lost and requeued the job

    def _send(self, identity: bytes, message: Message) -> bool:
        error = self._socket.send([identity, *encode(message)])
        if error is None:
            return True
        # EHOSTUNREACH under ROUTER_MANDATORY (the peer is gone) or EAGAIN (it stopped reading).
        if identity in self._workers:
            self._lose(identity, f"send failed: {error}")
        return False

    def _receive(self, frames: list[bytes]) -> None:
        identity, *rest = frames
        try:
            message = decode(rest)
        except ProtocolError as exc:
            log.warning("dropping malformed message from %r: %s", identity, exc)
            return
        self._handle(identity, message)  # LoopSocket logs what it raises: one bad message must not stop the broker

    def _handle(self, identity: bytes, message: Message) -> None:
        worker = self._workers.get(identity)
        if isinstance(message, Ready):
            if worker is None:
                self._workers[identity] = WorkerState(identity, message, time.monotonic())
                log.info("worker %s ready (pid %d, %d-d, %d credits)", identity.decode(errors="replace"),
                         message.pid, message.dimensions, message.credits)
                self._counters(message.model).workers_registered += 1
                self.registry_changed.set()
            else:
                worker.last_seen = time.monotonic()
            self.last_ready[message.model] = message
            self._dispatch(message.model)
            return
        if worker is None:
            if not isinstance(message, (Bye, Fatal)):
                self._send(identity, Reregister())
            return
        worker.last_seen = time.monotonic()
        if isinstance(message, Results):
            counters = self._counters(worker.ready.model)  # counted even when late: the worker did the work
            counters.tokens += sum(message.token_counts)
            counters.batch_sizes.update(message.batch_sizes)
            for request_id, answer in message.answers():
                job = worker.in_flight.pop(request_id, None)
                if job is not None and not job.future.done():
                    job.future.set_result(answer)
            self._dispatch(worker.ready.model)
        elif isinstance(message, (Tokens, Failure)):
            job = worker.in_flight.pop(message.request_id, None)
            if job is not None and not job.future.done():
                if isinstance(message, Tokens):
                    job.future.set_result(message)
                else:
                    job.future.set_exception(WorkerFailed(message.reason))
            self._dispatch(worker.ready.model)
        elif isinstance(message, Bye):
            worker.leaving = True
            self.registry_changed.set()
            log.info("worker %s is leaving", identity.decode(errors="replace"))
            self._dispatch(worker.ready.model)
        elif isinstance(message, Fatal):
            self._lose(identity, f"worker reported: {message.reason}")

    def _lose(self, identity: bytes, reason: str) -> None:
        worker = self._workers.pop(identity, None)
        if worker is None:
            return
        self.registry_changed.set()
        model = worker.ready.model
        counters = self._counters(model)
        if worker.leaving:  # it said BYE (scale down, stop): a departure, not a loss
            counters.workers_left += 1
        else:
            counters.workers_lost += 1
        log.warning("lost worker %s (%s); %d requests in flight", identity.decode(errors="replace"), reason,
                    len(worker.in_flight))
        queue = self._queues.setdefault(model, deque())
        for job in sorted(worker.in_flight.values(), key=lambda j: j.request_id, reverse=True):
            if job.future.done():
                continue
            if job.attempts < MAX_ATTEMPTS:
                counters.retried += 1
                job.worker = None
                queue.appendleft(job)
            else:
                counters.failed += 1
                job.future.set_exception(Unavailable(f"the worker serving model {model!r} was lost twice"))
        self._dispatch(model)

    async def _heartbeat_loop(self) -> None:
        interval = self._settings.heartbeat_interval_seconds
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for identity, worker in list(self._workers.items()):
                if now - worker.last_seen > interval * self._settings.heartbeat_liveness:
                    self._lose(identity, f"no heartbeat for {now - worker.last_seen:.1f}s")
                elif identity in self._workers:
                    self._send(identity, Heartbeat())
            self._fail_orphans(now)

    def _fail_orphans(self, now: float) -> None:
        """A model with no live worker answers 503 after WORKER_WAIT_SECONDS rather than queueing forever."""
        for model, queue in self._queues.items():
            if not queue or self.live_workers(model):
                continue
            wait = self._settings.worker_wait_seconds
            while queue and now - queue[0].queued_at > wait:
                job = queue.popleft()
                if not job.future.done():
                    self._counters(model).failed += 1
                    job.future.set_exception(
                        _no_worker_error(model, self._health(model), f" (waited WORKER_WAIT_SECONDS={wait:g})"))

    def _all_jobs(self) -> list[Job]:
        jobs = [job for queue in self._queues.values() for job in queue]
        jobs += [job for worker in self._workers.values() for job in worker.in_flight.values()]
        return jobs

    def registered_workers(self) -> list[RegisteredWorker]:
        """The workers registered now, for the gateway's STATUS (the supervisor learns from it who serves)."""
        return [RegisteredWorker(identity=w.identity.decode(errors="replace"), model=w.ready.model, pid=w.ready.pid,
                                 threads=w.ready.threads, in_flight=len(w.in_flight), leaving=w.leaving)
                for w in self._workers.values()]

    def queue_depths(self) -> dict[str, int]:
        """Requests waiting for a worker, per model."""
        return {model: len(queue) for model, queue in self._queues.items()}



def _no_worker_error(model: str, health: ModelHealth | None, waited: str = "") -> Unavailable:
    """503 for a model without a live worker, naming the cause when the supervisor knows it."""
    return Unavailable(no_worker_reason(model, health) + waited,
                       retry_after=retry_after(health) if health is not None else None)
