"""The supervisor's loop: reconcile running children with the desired ones, answer the CLI, stop cleanly.

Every ~0.5 s it reaps exits (saying how a process died), restarts each slot with capped exponential backoff
(backoff.py; it never gives up), spawns missing worker slots and stops extras, highest slot first. A worker
that exits with EXIT_MODEL_UNUSABLE (its canary crashed with every loading) marks its model failed, with the
reason, until the operator scales it again. Workers whose thread count no longer fits the allotment are
replaced rolling: the new ones first, the old ones once the new ones serve, so no request fails.

Every installed model is in `Desired`, most at 0 workers: the catalogue is read again every few seconds, so a
model imported or pulled while serving can be scaled at once. `scale` (the operator's word: kept in
DATA_DIR/scale.json) and `load` (a request's, with LOAD_ON_DEMAND; undone when the model idles) both pass
memory admission (memory_admission.py) before any worker starts.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil
import zmq

from modelstore.catalogue import Catalogue, UnknownModelError, load_catalogue
from shared.lifecycle import describe_exit
from shared.protocol import EXIT_MODEL_UNUSABLE, Control, ControlReply, ModelHealth, ProtocolError, Status, decode, encode
from shared.settings import Settings
from supervision.allotment import AllotmentError, threads_per_worker
from supervision.backoff import BackoffPolicy, RestartHistory
from supervision.children import Child, ChildSpec, spawn, worker_slot_key, worker_slots_prefix
from supervision.mappings import mapped_files
from supervision.memory_admission import check_admission
from supervision.models_report import models_report
from supervision.on_demand import OnDemandModels
from supervision.pulls import Pulls
from supervision.ramdisk.supervisor_side import RamDiskControl
from supervision.roles import runs
from supervision.scale_state import read_scale_state, remember_scale

log = logging.getLogger(__name__)
RECONCILE_SECONDS = 0.5
CATALOGUE_REFRESH_SECONDS = 2.0  # how soon a model imported or pulled while serving can be scaled


class ModelNotInstalled(ValueError):
    """`scale` or `load` named a model that is not installed here."""


@dataclass
class Desired:
    """The workers the supervisor keeps running: a count per model, and the model file new workers map."""

    workers: dict[str, int]  # model -> count
    model_paths: dict[str, str]  # the file new workers map: the installed one, or its RAM disk copy
    disk_paths: dict[str, str] = field(default_factory=dict)  # the installed files; empty: model_paths

    def served(self) -> list[str]:
        """The models with at least one worker wanted, sorted."""
        return sorted(model for model, count in self.workers.items() if count > 0)


class Supervisor:
    """Keeps this host's roles running (writer, gateways, workers as `Desired` says); answers the control socket."""

    def __init__(self, settings: Settings, desired: Desired, env: dict[str, str], foreground: bool,
                 stderr: IO[bytes] | None = None) -> None:
        self._settings = settings
        self._desired = desired
        self._env = env
        self._foreground = foreground
        self._stderr = stderr
        self._catalogue: Catalogue | None = None
        self._catalogue_read_at = 0.0
        self._on_demand = OnDemandModels()
        self._pulls = Pulls(settings, env)
        self._children: list[Child] = []
        self._backoff = BackoffPolicy(settings.restart_backoff_initial_seconds, settings.restart_backoff_max_seconds,
                                      settings.restart_backoff_reset_seconds)
        self._history: dict[str, RestartHistory] = {}  # "writer", "gateway:<slot>", "worker:<model>:<slot>"
        self._registered: dict[int, set[int]] = {}  # gateway pid -> pids of the workers registered with it
        self._listener: socket.socket | None = None  # the HTTP socket every gateway process accepts on
        self._failed_models: dict[str, str] = {}  # model -> why it cannot be served here
        self._worker_ids = itertools.count(1)
        self._stopping = False
        self._context = zmq.Context()
        self._control = self._context.socket(zmq.REP)
        self._events = self._context.socket(zmq.PULL)
        # The RAM disk holds the models served at start; a model scaled up later maps its installed file.
        disk_paths = desired.disk_paths or desired.model_paths
        self._ramdisk = RamDiskControl(settings, desired.model_paths,
                                       {model: disk_paths[model] for model in desired.served()})

    @property
    def _served(self) -> tuple[str, ...]:
        """The models a gateway (or indexer) started now lists at once: those with workers wanted. A host without
        workers lists what the workers elsewhere load (its counts are all 0)."""
        if not runs(self._settings, "workers"):
            return tuple(sorted(self._desired.workers))
        return tuple(self._desired.served())

    # ---- main loop -------------------------------------------------------------------------------------------
    def run(self, stop_requested: Any) -> None:
        """Serve until `stop_requested.is_set()` or a stop command; then stop every child."""
        self._settings.run_dir.mkdir(parents=True, exist_ok=True)
        for endpoint, address in ((self._control, self._settings.control_address),
                                  (self._events, self._settings.events_address)):
            endpoint.setsockopt(zmq.LINGER, 0)
            endpoint.bind(address)
        if runs(self._settings, "gateway"):
            self._listener = listening_socket(self._settings.listen_host, self._settings.listen_port)
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
            self._pulls.stop()
            if self._listener is not None:
                self._listener.close()

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
                    if child.spec.role in ("writer", "gateway", "indexer"):
                        child.ready = message.state == "ready"
            if message.role == "gateway":
                self._registered[message.pid] = {worker.pid for worker in message.workers if not worker.leaving}
                self._mark_registered_workers()
            elif message.role == "worker" and not runs(self._settings, "gateway"):
                # No gateway here to confirm the registration: the worker's word that a gateway answers it.
                for child in self._children:
                    if child.pid == message.pid:
                        child.ready = message.state == "ready"

    # ---- reconcile -------------------------------------------------------------------------------------------
    def _reconcile(self) -> None:
        now = time.monotonic()
        self._reap(now)
        for child in self._children:
            if child.stopping_since is not None and now - child.stopping_since > self._settings.stop_timeout_seconds:
                log.warning("%s (pid %d) did not stop in time; killing it", child.spec.name, child.pid)
                child.kill()
        local_writer = runs(self._settings, "writer")
        if local_writer:
            self._ensure_single("writer", now)
        if runs(self._settings, "gateway"):
            if not local_writer:  # the writer is on another host: this one keeps its own search indexes
                self._ensure_single("indexer", now)
            self._ensure_gateways(now)  # with the writer: a gateway waits for its tables itself (gateway/app.py)
        if runs(self._settings, "workers"):
            self._refresh_installed(now)
            self._unload_idle(now)
            self._reconcile_workers(now)
        self._ramdisk.reconcile(self._children)

    def _refresh_installed(self, now: float, force: bool = False) -> Catalogue:
        """Every installed model in `Desired` (new ones at 0 workers), from the catalogue read at most every
        CATALOGUE_REFRESH_SECONDS (or now, when `force`)."""
        if self._catalogue is not None and not force and now - self._catalogue_read_at < CATALOGUE_REFRESH_SECONDS:
            return self._catalogue
        self._catalogue_read_at = now
        try:
            catalogue = self._catalogue = load_catalogue(self._settings.models_dir)
        except (OSError, ValueError) as exc:  # an imported.toml being rewritten, or damaged: keep what we knew
            log.warning("could not read the model catalogue: %s", exc)
            return self._catalogue or Catalogue({})
        for entry in catalogue.installed(self._settings.models_dir):
            if entry.name not in self._desired.workers:
                path = str(entry.installed_path(self._settings.models_dir))
                self._desired.workers[entry.name] = 0
                self._desired.model_paths[entry.name] = path
                if self._desired.disk_paths:
                    self._desired.disk_paths[entry.name] = path
                log.info("model %s is installed: `supervisor.py scale %s N` serves it", entry.name, entry.name)
        return catalogue

    def _unload_idle(self, now: float) -> None:
        """Scale the models loaded on demand back to 0 once they have had no request for MODEL_IDLE_UNLOAD_SECONDS."""
        requests: dict[str, int] = {}  # the models with a ready worker: their workers' request counters summed
        for child in self._children:
            if child.spec.role == "worker" and child.ready and child.status is not None:
                requests[child.spec.model] = requests.get(child.spec.model, 0) + child.status.counters.get("requests", 0)
        for model in self._on_demand.idle(requests, now, self._settings.model_idle_unload_seconds):
            log.info("unloading %s: loaded on demand, no request for MODEL_IDLE_UNLOAD_SECONDS=%g", model,
                     self._settings.model_idle_unload_seconds)
            self._desired.workers[model] = 0
            self._on_demand.forget(model)

    def _slot_history(self, slot: str) -> RestartHistory:
        history = self._history.get(slot)
        if history is None:
            history = self._history[slot] = RestartHistory(self._backoff)
        return history

    def _worker_histories(self, model: str) -> dict[int, RestartHistory]:
        """The restart histories of a model's worker slots, by slot number."""
        prefix = worker_slots_prefix(model)
        return {int(key[len(prefix):]): history for key, history in self._history.items() if key.startswith(prefix)}

    def _reap(self, now: float) -> None:
        self._drain_events()  # a worker's last STATUS (why it gave up) arrives just before its exit
        for child in list(self._children):
            code = child.process.poll()
            if code is None:
                continue
            self._children.remove(child)
            self._registered.pop(child.pid, None)
            if child.stopping_since is not None:
                log.info("%s (pid %d) stopped: %s", child.spec.name, child.pid, describe_exit(code))
                continue
            if child.spec.role == "worker" and code == EXIT_MODEL_UNUSABLE:
                self._mark_failed(child)
                continue
            history = self._slot_history(child.spec.slot_key)
            delay = history.record_death(now, now - child.started_at, describe_exit(code))
            log.error("%s (pid %d) %s; restarting in %.0fs (death %d of this slot in %.0fs)", child.spec.name,
                      child.pid, describe_exit(code), delay, history.deaths, now - history.streak_started)

    def _mark_failed(self, child: Child) -> None:
        status = child.status
        reason = status.reason if status is not None and status.state == "failed" else ""
        self._failed_models[child.spec.model] = reason or (
            f"its worker found no way to load it (see logs/worker-{child.spec.model}-{child.spec.worker_id}.log)")
        log.error("model %s failed: %s; `supervisor.py scale %s N` tries again", child.spec.model,
                  self._failed_models[child.spec.model], child.spec.model)

    def _ensure_single(self, role: str, now: float) -> Child | None:
        """The one running writer (or indexer), started when there is none and its backoff allows."""
        running = [c for c in self._children if c.spec.role == role and c.stopping_since is None]
        if running:
            return running[0]
        if not self._slot_history(role).may_start(now):
            return None
        return self._spawn(ChildSpec(role))

    def _ensure_gateways(self, now: float) -> None:
        """GATEWAY_PROCESSES gateways, each in its slot, all accepting on the one listening socket."""
        running = {c.spec.slot for c in self._children if c.spec.role == "gateway" and c.stopping_since is None}
        for slot in range(self._settings.gateway_processes):
            spec = ChildSpec("gateway", slot=slot, listen_fd=self._listener.fileno() if self._listener else None)
            if slot not in running and self._slot_history(spec.slot_key).may_start(now):
                self._spawn(spec)

    def _mark_registered_workers(self) -> None:
        """A worker serves once every running gateway has it registered (each gateway has its own queues)."""
        gateways = [c.pid for c in self._children if c.spec.role == "gateway" and c.stopping_since is None]
        for child in self._children:
            if child.spec.role == "worker" and gateways:
                child.ready = all(child.pid in self._registered.get(pid, set()) for pid in gateways)

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
            occupied = {c.spec.slot for c in fitting}
            for slot in range(count):
                if slot not in occupied and self._slot_history(worker_slot_key(model, slot)).may_start(now):
                    self._spawn(ChildSpec("worker", model, next(self._worker_ids), threads, path, slot=slot))
            for extra in sorted((c for c in fitting if c.spec.slot >= count), key=lambda c: -c.spec.slot):
                log.info("scaling %s down: stopping %s (pid %d)", model, extra.spec.name, extra.pid)
                extra.terminate()
            kept = [c for c in fitting if c.spec.slot < count]
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
        except (ModelNotInstalled, UnknownModelError) as exc:
            reply = ControlReply(error=str(exc), error_kind="not_found")
        except (ProtocolError, AllotmentError, KeyError, ValueError, TypeError) as exc:
            reply = ControlReply(error=str(exc), error_kind="refused")
        self._control.send_multipart(encode(reply))

    def _command(self, request: Control) -> ControlReply:
        if request.command == "status":
            return ControlReply(data=self.status())
        if request.command == "stop":
            self._stopping = True
            return ControlReply(data={"stopping": True, "pid": os.getpid()})
        if request.command == "scale":
            return ControlReply(data=self._scale(str(request.arguments["model"]), int(request.arguments["count"]),
                                                 by_operator=True))
        if request.command == "load":
            return ControlReply(data=self._load(str(request.arguments["model"])))
        if request.command == "models":
            return ControlReply(data=self.models_report())
        if request.command == "pull":
            pull = self._pulls.start(str(request.arguments.get("target", "")), str(request.arguments.get("name", "")))
            return ControlReply(data=pull.report())
        if request.command == "health":
            return ControlReply(health=self.model_health())
        if request.command == "ramdisk":
            return ControlReply(ramdisk=self._ramdisk.command(request.arguments, self._children))
        raise ValueError(f"unknown command {request.command!r}")

    def _scale(self, model: str, count: int, *, by_operator: bool) -> dict[str, Any]:
        """Set `model`'s worker count after the allotment and memory admission; the operator's is kept on disk."""
        if not runs(self._settings, "workers"):
            raise ValueError(f"this host runs no workers (ROLES={','.join(self._settings.roles)}); scale them "
                             "on the host that does")
        self._refresh_installed(time.monotonic(), force=True)
        if model not in self._desired.workers:
            raise ModelNotInstalled(f"model {model!r} is not installed; installed models: "
                             f"{', '.join(sorted(self._desired.workers))} (`supervisor.py models pull NAME` or "
                             "`models import PATH` installs one)")
        if count < 0:
            raise ValueError("the worker count must be 0 or more")
        previous = self._desired.workers[model]
        active = [c for c in self._children if c.spec.role == "worker" and c.spec.model == model
                  and c.stopping_since is None]
        self._desired.workers[model] = count
        try:
            threads = self._allot()
            check_admission(model, Path(self._desired.model_paths[model]), count - len(active), bool(active),
                            self._settings.memory_reserve_bytes)
        except ValueError:  # AllotmentError, AdmissionRefused: nothing changes
            self._desired.workers[model] = previous
            raise
        self._failed_models.pop(model, None)
        for slot in self._worker_histories(model):
            # scaling is the operator's word: no backoff left from earlier deaths
            del self._history[worker_slot_key(model, slot)]
        if by_operator:
            self._on_demand.forget(model)
            remember_scale(self._settings.scale_state_file, model, count)
        log.info("scale %s: %d -> %d workers%s", model, previous, count, "" if by_operator else " (on demand)")
        return {"model": model, "count": count, "threads_per_worker": threads}

    def _load(self, model: str) -> dict[str, Any]:
        """LOAD_ON_DEMAND: one worker for `model` when it has none wanted; unloaded again when idle."""
        if self._desired.workers.get(model, 0) > 0:
            return {"model": model, "count": self._desired.workers[model], "threads_per_worker": self._allot()}
        reply = self._scale(model, 1, by_operator=False)
        self._on_demand.loaded(model, time.monotonic())
        return reply

    def models_report(self) -> dict[str, Any]:
        """Every installed model with its workers, the cache counters, the pulls (the `models` command)."""
        queues: dict[str, int] = {}
        for child in self._children:
            if child.spec.role == "gateway" and child.status is not None:
                for model, depth in child.status.queues.items():
                    queues[model] = queues.get(model, 0) + depth
        catalogue = self._refresh_installed(time.monotonic())
        return models_report(self.status(), catalogue, self._settings.models_dir, self._on_demand.names(), queues,
                             self._pulls.reports(), self._settings.memory_reserve_bytes)

    def status(self) -> dict[str, Any]:
        """The answer to `status`: each child's state, memory and counters, restarts due, failed models, readiness."""
        now = time.monotonic()
        rows = []
        for child in self._children:
            counters = child.status.counters if child.status else {}
            status = child.status
            try:
                rss = psutil.Process(child.pid).memory_info().rss
            except psutil.Error:
                rss = 0
            state = "stopping" if child.stopping_since is not None else ("ready" if child.ready else "starting")
            rows.append({"role": child.spec.role, "model": child.spec.model, "worker_id": child.spec.worker_id,
                         "slot": child.spec.slot, "pid": child.pid, "state": state, "rss_bytes": rss,
                         "threads": child.spec.threads,
                         "requests": counters.get("requests", 0), "texts": counters.get("texts", 0),
                         "counters": counters,
                         # the kernel's word (/proc/<pid>/maps) over the worker's own report
                         "mapped_from": (mapped_files(child.pid) or [status.mapped_from if status else ""])[0],
                         "weight_repack": status.weight_repack if status else None,
                         "workers": [asdict(worker) for worker in status.workers] if status else [],
                         "search": [asdict(index) for index in status.search] if status else [],
                         **self._history_fields(child.spec.slot_key, now)})
        ready = bool(rows) and all(r["state"] == "ready" for r in rows) and all(
            sum(1 for r in rows if r["model"] == model and r["state"] == "ready") >= count
            for model, count in self._desired.workers.items() if model not in self._failed_models)
        roles = {r["role"] for r in rows if r["state"] == "ready"}
        expected = {"writer", "gateway"} & set(self._settings.roles)
        if "gateway" in expected and "writer" not in expected:
            expected.add("indexer")
        running = {child.spec.slot_key for child in self._children}
        waiting = [{"slot": key, **self._history_fields(key, now)} for key, history in sorted(self._history.items())
                   if key not in running and history.wait_left(now) is not None]
        return {"pid": os.getpid(), "port": self._settings.listen_port, "data_dir": str(self._settings.data_dir),
                "processes": rows, "ready": ready and expected <= roles, "roles": list(self._settings.roles),
                "desired": dict(self._desired.workers), "failed_models": dict(self._failed_models),
                "scaled": read_scale_state(self._settings.scale_state_file), "on_demand": self._on_demand.names(),
                "waiting_to_restart": waiting,
                "restarts": {key: history.restarts for key, history in self._history.items() if history.restarts}}

    def _history_fields(self, slot_key: str, now: float) -> dict[str, Any]:
        """A slot's restarts, last exit and pending restart, for `status`."""
        history = self._history.get(slot_key)
        if history is None:
            return {"restarts": 0, "last_exit": "", "last_exit_seconds_ago": None, "next_restart_in": None}
        return {"restarts": history.restarts, "last_exit": history.last_exit,
                "last_exit_seconds_ago": None if history.last_exit_at is None else round(now - history.last_exit_at, 1),
                "next_restart_in": history.wait_left(now)}

    def model_health(self) -> list[ModelHealth]:
        """Each served model as the gateway explains it when it has no live worker.

        Nothing when the workers run on other hosts: this supervisor cannot say why they are missing."""
        if not runs(self._settings, "workers"):
            return []
        now = time.monotonic()
        report = []
        for model, count in sorted(self._desired.workers.items()):
            workers = [c for c in self._children if c.spec.role == "worker" and c.spec.model == model
                       and c.stopping_since is None]
            slots = [history for slot, history in self._worker_histories(model).items() if slot < count]
            dying = [h for h in slots if h.deaths and h.last_exit_at is not None]
            latest = max(dying, key=lambda h: h.last_exit_at or 0.0, default=None)
            waits = [w for h in slots if (w := h.wait_left(now)) is not None]
            report.append(ModelHealth(
                model=model, desired=count, ready=sum(1 for c in workers if c.ready),
                starting=sum(1 for c in workers if not c.ready), failed_reason=self._failed_models.get(model, ""),
                deaths=sum(h.deaths for h in dying),
                streak_seconds=now - min((h.streak_started for h in dying), default=now),
                last_exit=latest.last_exit if latest else "", next_restart_in=min(waits, default=None)))
        return report

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


def listening_socket(host: str, port: int) -> socket.socket:
    """The HTTP port, opened once by the supervisor and inherited by every gateway process (gateway/__main__.py)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(2048)
    listener.set_inheritable(True)
    return listener
