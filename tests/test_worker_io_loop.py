"""The worker's I/O thread on real ZeroMQ sockets (no model): what it tells the gateway about its compute thread."""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path

import zmq

from shared.lifecycle import StopFlag
from shared.protocol import Fatal, Message, Ready, decode
from shared.settings import load_settings
from workers.embedder.compute import Inbox
from workers.embedder.engine import EngineConfig
from workers.embedder.io_loop import WorkerIdentity, run_io_loop


def test_a_dead_compute_thread_makes_the_worker_say_fatal_and_end(tmp_path: Path) -> None:
    address = "inproc://gateway-io-loop-test"
    settings = load_settings(tmp_path / "none.env", {"DATA_DIR": str(tmp_path), "WORKER_CONNECT_ADDRESS": address})
    context = zmq.Context()
    gateway = context.socket(zmq.ROUTER)
    gateway.bind(address)
    pipe = context.socket(zmq.PAIR)  # the compute thread's end is never there: it "died"
    inbox: Inbox = queue.SimpleQueue()
    ready = Ready(model="m", worker_id=1, pid=os.getpid(), dimensions=2, max_tokens=8, credits=8, threads=1)
    outcome: list[BaseException] = []

    def io_thread() -> None:
        try:
            run_io_loop(settings, StopFlag(), WorkerIdentity("m", 1, os.getpid()), ready, context, inbox, pipe,
                     EngineConfig("m.gguf", "mean", 8, threads=1, token_budget=8), compute_alive=lambda: False)
        except BaseException as exc:  # the test inspects what ended the loop
            outcome.append(exc)

    thread = threading.Thread(target=io_thread, daemon=True)
    thread.start()
    try:
        heard: list[Message] = []
        while len(heard) < 2:
            assert gateway.poll(5000), f"the worker went silent after {heard}"
            heard.append(decode(gateway.recv_multipart()[1:]))
        assert isinstance(heard[0], Ready)
        assert isinstance(heard[1], Fatal) and "compute thread" in heard[1].reason
        thread.join(timeout=5)
        assert not thread.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], RuntimeError) and "compute thread" in str(outcome[0])
    finally:
        gateway.close(linger=0)
        pipe.close(linger=0)
        context.term()
