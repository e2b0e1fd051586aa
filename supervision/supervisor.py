"""The supervisor's loop: reconcile running children with the desired ones, answer the CLI, stop cleanly.

Every ~0.5 s it reaps exits (saying how a process died), restarts with backoff, spawns missing worker slots
and stops extras newest first. A worker slot that dies 3 times in 30 s marks its model failed until the
operator scales it again. Workers whose thread count no longer fits the allotment are replaced rolling:
the new ones first, the old ones once the new ones serve, so no request fails.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import IO, Any

import psutil
import zmq

from shared.protocol import Control, ControlReply, ProtocolError, Status, decode, encode
from shared.settings import Settings
from supervision.allotment import AllotmentError, threads_per_worker
from supervision.children import Child, ChildSpec, describe_exit, spawn
from supervision.mappings import mapped_files
from supervision.ramdisk_control import RamDiskControl

log = logging.getLogger(__name__)
RECONCILE_SECONDS = 0.5
CRASH_WINDOW_SECONDS = 30.0
CRASH_LIMIT = 3


@dataclass
class Desired:
    workers: dict[str, int]  # model -> count
    model_paths: dict[str, str]  # the file new workers map: the installed one, or its RAM disk copy
    disk_paths: dict[str, str] = field(default_factory=dict)  # the installed files; empty: model_paths


@dataclass
class _SlotHistory:
    deaths: deque[float] = field(default_factory=lambda: deque(maxlen=CRASH_LIMIT))
    next_start: float = 0.0


class Supervisor:
    def __init__(self, settings: Settings, desired: Desired, env: dict[str, str], foreground: bool,
                 stderr: IO[bytes] | None = None) -> None:
        self._settings = settings
        self._desired = desired
        self._env = env
        self._foreground = foreground
        self._stderr = stderr
        self._served = tuple(sorted(desired.workers))
        self._children: list[Child] = []
        self._history: dict[str, _SlotHistory] = defaultdict(_SlotHistory)
        self._failed_models: set[str] = set()
        self._worker_ids = itertools.count(1)
        self._restarts: dict[str, int] = defaultdict(int)
        self._stopping = False
        self._context = zmq.Context()
        self._control = self._context.socket(zmq.REP)
        self._events = self._context.socket(zmq.PULL)
        self._ramdisk = RamDiskControl(settings, desired.model_paths, dict(desired.disk_paths or desired.model_paths))

    # ---- main loop -------------------------------------------------------------------------------------------
    def run(self, stop_requested: Any) -> None:
        """Serve until `stop_requested.is_set()` or a stop command; then stop every child."""
        self._settings.run_dir.mkdir(parents=True, exist_ok=True)
        for socket, address in ((self._control, self._settings.control_address),
                                (self._events, self._settings.events_address)):
            socket.setsockopt(zmq.LINGER, 0)
            socket.bind(address)
        self._allot()  # refuse impossible configurations before spawning anything
        poller = zmq.Poller()
        poller.register(self._control, zmq.POLLIN)
        poller.register(self._events, zmq.POLLIN)
        next_reconcile = 0.0
        try:
            while not self._stopping and not stop_requested.is_set():
                for socket, _ in poller.poll(int(RECONCILE_SECONDS * 1000)):
                    if socket is self._events:
                        self._drain_events()
                    else:
                        self._answer_control()
                if time.monotonic() >= next_reconcile:
                    self._reconcile()
                    next_reconcile = time.monotonic() + RECONCILE_SECONDS
        finally:
            self._stop_all()
            self._control.close(linger=0)
            self._events.close(linger=0)
            self._context.term()

    def _drain_events(self) -> None:
        while self._events.poll(0):
            try:
                message = decode(self._events.recv_multipart())
            except ProtocolError:
                continue
            if not isinstance(message, Status):
                continue
            for child in self._children:
                if child.pid == message.pid:
                    child.status = message
                    if child.spec.role in ("writer", "gateway"):
                        child.ready = message.state == "ready"
            if message.role == "gateway":
                registered = {w["pid"] for w in message.detail.get("workers", []) if not w.get("leaving")}
                for child in self._children:
                    if child.spec.role == "worker" and child.pid in registered:
                        child.ready = True

    # ---- reconcile -------------------------------------------------------------------------------------------
    def _reconcile(self) -> None:
        now = time.monotonic()
        self._reap(now)
        for child in self._children:
            if child.stopping_since is not None and now - child.stopping_since > self._settings.stop_timeout_seconds:
                log.warning("%s (pid %d) did not stop in time; killing it", child.spec.name, child.pid)
                child.kill()
        writer = self._ensure_single("writer", now, after=None)
        self._ensure_single("gateway", now, after=writer)
        self._reconcile_workers(now)
        self._ramdisk.reconcile(self._children)

    def _reap(self, now: float) -> None:
        for child in list(self._children):
            code = child.process.poll()
            if code is None:
                continue
            self._children.remove(child)
            if child.stopping_since is not None:
                log.info("%s (pid %d) stopped: %s", child.spec.name, child.pid, describe_exit(code))
                continue
            slot = child.spec.role if child.spec.role != "worker" else f"worker:{child.spec.model}"
            history = self._history[slot]
            history.deaths.append(now)
            self._restarts[slot] += 1
            delay = min(0.5 * 2 ** (len(history.deaths) - 1), 10.0)
            history.next_start = now + delay
            log.error("%s (pid %d) %s; restarting in %.1fs", child.spec.name, child.pid, describe_exit(code), delay)
            if child.spec.role == "worker" and len(history.deaths) == CRASH_LIMIT and \
                    now - history.deaths[0] < CRASH_WINDOW_SECONDS:
                self._failed_models.add(child.spec.model)
                log.error("model %s failed: its worker died %d times in %.0fs; `scale` it to try again",
                          child.spec.model, CRASH_LIMIT, CRASH_WINDOW_SECONDS)

    def _ensure_single(self, role: str, now: float, after: Child | None) -> Child | None:
        running = [c for c in self._children if c.spec.role == role and c.stopping_since is None]
        if running:
            return running[0]
        if role == "gateway" and (after is None or not after.ready):
            return None  # the gateway reads the database the writer creates
        if now < self._history[role].next_start:
            return None
        return self._spawn(ChildSpec(role))

    def _reconcile_workers(self, now: float) -> None:
        try:
            threads = self._allot()
        except AllotmentError as exc:
            log.error("%s", exc)
            return
        for model, count in self._desired.workers.items():
            if model in self._failed_models:
                continue
            active = [c for c in self._children if c.spec.role == "worker" and c.spec.model == model
                      and c.stopping_since is None]
            path = self._desired.model_paths[model]  # changes when the RAM disk is set up or cleared
            fitting = [c for c in active if c.spec.threads == threads and c.spec.model_path == path]
            stale = [c for c in active if c not in fitting]
            history = self._history[f"worker:{model}"]
            for _ in range(count - len(fitting)):
                if now < history.next_start:
                    break
                self._spawn(ChildSpec("worker", model, next(self._worker_ids), threads, self._desired.model_paths[model]))
            for extra in sorted(fitting, key=lambda c: c.started_at)[count:]:
                log.info("scaling %s down: stopping %s (pid %d)", model, extra.spec.name, extra.pid)
                extra.terminate()
            kept = sorted(fitting, key=lambda c: c.started_at)[:count]
            if stale and len(kept) >= count and all(c.ready for c in kept):
                for old in stale:
                    log.info("replacing %s (pid %d): %d threads and %s; now %d threads and %s", old.spec.name,
                             old.pid, old.spec.threads, old.spec.model_path, threads, path)
                    old.terminate()

    def _allot(self) -> int:
        total = sum(n for model, n in self._desired.workers.items() if model not in self._failed_models)
        return threads_per_worker(total, self._settings.worker_threads_total,
                                  self._settings.allow_thread_oversubscription)

    def _spawn(self, spec: ChildSpec) -> Child:
        child = spawn(spec, self._env, self._served, self._foreground, self._stderr)
        self._children.append(child)
        log.info("started %s (pid %d)%s", spec.name, child.pid, f" with {spec.threads} threads" if spec.threads else "")
        return child

    # ---- control ---------------------------------------------------------------------------------------------
    def _answer_control(self) -> None:
        try:
            request = decode(self._control.recv_multipart())
            if not isinstance(request, Control):
                raise ProtocolError("expected CONTROL")
            reply = self._command(request)
        except (ProtocolError, AllotmentError, KeyError, ValueError, TypeError) as exc:
            reply = ControlReply(error=str(exc))
        self._control.send_multipart(encode(reply))

    def _command(self, request: Control) -> ControlReply:
        if request.command == "status":
            return ControlReply(data=self.status())
        if request.command == "stop":
            self._stopping = True
            return ControlReply(data={"stopping": True, "pid": os.getpid()})
        if request.command == "scale":
            model, count = str(request.arguments["model"]), int(request.arguments["count"])
            if model not in self._desired.workers:
                raise ValueError(f"model {model!r} is not served; served models: {', '.join(self._served)}")
            if count < 0:
                raise ValueError("the worker count must be 0 or more")
            previous = self._desired.workers[model]
            self._desired.workers[model] = count
            try:
                self._allot()
            except AllotmentError:
                self._desired.workers[model] = previous
                raise
            self._failed_models.discard(model)
            self._history[f"worker:{model}"] = _SlotHistory()
            log.info("scale %s: %d -> %d workers", model, previous, count)
            return ControlReply(data={"model": model, "count": count, "threads_per_worker": self._allot()})
        if request.command == "ramdisk":
            return ControlReply(data=self._ramdisk.command(request.arguments, self._children))
        raise ValueError(f"unknown command {request.command!r}")

    def status(self) -> dict[str, Any]:
        rows = []
        for child in self._children:
            counters = child.status.counters if child.status else {}
            detail = child.status.detail if child.status else {}
            try:
                rss = psutil.Process(child.pid).memory_info().rss
            except psutil.Error:
                rss = 0
            state = "stopping" if child.stopping_since is not None else ("ready" if child.ready else "starting")
            rows.append({"role": child.spec.role, "model": child.spec.model, "worker_id": child.spec.worker_id,
                         "pid": child.pid, "state": state, "rss_bytes": rss, "threads": child.spec.threads,
                         "requests": counters.get("requests", 0), "texts": counters.get("texts", 0),
                         "counters": counters,
                         # the kernel's word (/proc/<pid>/maps) over the worker's own report
                         "mapped_from": (mapped_files(child.pid) or [detail.get("mapped_from", "")])[0],
                         "workers": detail.get("workers", [])})
        ready = bool(rows) and all(r["state"] == "ready" for r in rows) and all(
            sum(1 for r in rows if r["model"] == model and r["state"] == "ready") >= count
            for model, count in self._desired.workers.items() if model not in self._failed_models)
        roles = {r["role"] for r in rows if r["state"] == "ready"}
        return {"pid": os.getpid(), "port": self._settings.listen_port, "data_dir": str(self._settings.data_dir),
                "processes": rows, "ready": ready and {"writer", "gateway"} <= roles,
                "desired": dict(self._desired.workers), "failed_models": sorted(self._failed_models),
                "restarts": dict(self._restarts)}

    # ---- stop ------------------------------------------------------------------------------------------------
    def _stop_all(self) -> None:
        """Gateway first (it drains HTTP and hands its rows to the writer), then workers, then the writer."""
        log.info("stopping all processes")
        for roles in (("gateway",), ("worker",), ("writer",)):
            group = [c for c in self._children if c.spec.role in roles]
            for child in group:
                child.terminate()
            deadline = time.monotonic() + self._settings.stop_timeout_seconds
            for child in group:
                try:
                    child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
                except Exception:
                    log.warning("%s (pid %d) did not stop in time; killing it", child.spec.name, child.pid)
                    child.kill()
                    child.process.wait()
                log.info("%s (pid %d) %s", child.spec.name, child.pid, describe_exit(child.process.returncode))
        self._children.clear()
