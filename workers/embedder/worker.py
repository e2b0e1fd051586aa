"""The embedding worker process: load the engine, start the compute thread, run the I/O loop on this thread.

The I/O thread (io_loop.py) owns the DEALER to the gateway; the compute thread (compute.py) owns the engine;
work goes to it on a queue and answers come back over an inproc PAIR.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

import zmq

from shared.lifecycle import StopFlag
from shared.protocol import Ready, Status
from shared.settings import Settings
from shared.status_reporter import StatusReporter
from workers.embedder.compute import ComputeLoop, Inbox
from workers.embedder.engine import Engine, EngineConfig
from workers.embedder.io_loop import WorkerIdentity, run_io_loop

log = logging.getLogger(__name__)
_PIPE = "inproc://compute"


def run_embedder(settings: Settings, stop: StopFlag, identity: WorkerIdentity, config: EngineConfig) -> None:
    """Load the model, then serve until stopped. Returns after in-flight requests are answered."""
    started = time.monotonic()
    engine = Engine(config)
    log.info("loaded %s from %s in %.2fs (%d-d, %d threads, weight repacking %s)", identity.model, config.model_path,
             time.monotonic() - started, engine.dimensions, config.threads, "on" if config.weight_repack else "off")
    context = zmq.Context()
    compute_end = context.socket(zmq.PAIR)
    compute_end.bind(_PIPE)
    io_end = context.socket(zmq.PAIR)
    io_end.connect(_PIPE)
    inbox: Inbox = queue.SimpleQueue()
    compute_loop = ComputeLoop(engine, inbox, compute_end, config.token_budget)
    compute = threading.Thread(target=compute_loop.run, args=(settings.batch_window_ms / 1000,), name="compute",
                               daemon=True)
    compute.start()
    ready = Ready(model=identity.model, worker_id=identity.worker_id, pid=identity.pid,
                  dimensions=engine.dimensions, max_tokens=engine.max_tokens, credits=settings.worker_credits,
                  threads=config.threads, vocab_size=engine.vocab_size, special_tokens=engine.special_tokens,
                  pooling=config.pooling)
    try:
        run_io_loop(settings, stop, identity, ready, context, inbox, io_end, config, compute.is_alive)
    finally:
        inbox.put(None)
        compute.join(timeout=5)
        io_end.close(linger=0)
        context.term()
        engine.close()


def report_unusable(settings: Settings, identity: WorkerIdentity, reason: str) -> None:
    """Tell the supervisor, before exiting with EXIT_MODEL_UNUSABLE, why this model cannot be served here."""
    context = zmq.Context()
    reporter = StatusReporter(context, settings.events_address)
    reporter.send(Status(role="worker", pid=identity.pid, state="failed", model=identity.model,
                         worker_id=identity.worker_id, reason=reason))
    reporter.close(linger_seconds=2.0)
    context.term()
