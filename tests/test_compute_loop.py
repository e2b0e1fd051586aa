"""The worker's compute thread, routing only (a fake engine): failures stay with the requests they hit."""

from __future__ import annotations

import threading
import time

import numpy as np
import zmq

from shared.protocol import Cancel, Embed, Failure, Result, decode, encode
from workers.embedder.compute import STOP, ComputeLoop


class FakeEngine:
    """Tokenises by characters; refuses any call that contains the text "boom"."""

    dimensions = 2
    max_sequences = 8

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) for c in text] or [0]

    def embed(self, sequences: list[list[int]]) -> np.ndarray:
        if any(seq == [ord(c) for c in "boom"] for seq in sequences):
            raise RuntimeError("decode failed")
        return np.ones((len(sequences), 2), dtype=np.float32)


def test_a_failed_llama_call_fails_its_requests_and_the_others_are_answered() -> None:
    context = zmq.Context()
    ours, theirs = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    ours.bind("inproc://compute-test")
    theirs.connect("inproc://compute-test")
    # A token budget of 4 puts "boom" in a call of its own, so only request 2 meets the failure.
    thread = threading.Thread(target=ComputeLoop(FakeEngine(), theirs, 4).run, args=(0.05,), daemon=True)
    thread.start()
    try:
        for request_id, text in ((1, "fine"), (2, "boom"), (3, "also")):
            ours.send_multipart(encode(Embed(request_id=request_id, texts=[text])))
        answers = {}
        while len(answers) < 3:
            assert ours.poll(5000), f"no answer; got {answers}"
            message = decode(ours.recv_multipart())
            answers[message.request_id] = message  # type: ignore[union-attr]
        assert isinstance(answers[2], Failure) and "decode failed" in answers[2].reason
        assert isinstance(answers[1], Result) and isinstance(answers[3], Result)
        assert thread.is_alive()
    finally:
        ours.send_multipart(STOP)
        thread.join(timeout=5)
        ours.close(linger=0)
        context.term()


class GatedEngine(FakeEngine):
    """Records each call's texts; the first call waits until the test lets it finish."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.in_first_call = threading.Event()
        self.release = threading.Event()

    def embed(self, sequences: list[list[int]]) -> np.ndarray:
        self.calls.append(["".join(map(chr, seq)) for seq in sequences])
        if len(self.calls) == 1:
            self.in_first_call.set()
            self.release.wait(5)
        return super().embed(sequences)


def _answers(socket: zmq.Socket, count: int) -> dict[int, object]:
    answers: dict[int, object] = {}
    while len(answers) < count:
        assert socket.poll(5000), f"no answer; got {answers}"
        message = decode(socket.recv_multipart())
        answers[message.request_id] = message  # type: ignore[union-attr]
    return answers


def test_a_request_arriving_during_a_call_shares_the_next_call_with_queued_texts() -> None:
    context = zmq.Context()
    ours, theirs = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    ours.bind("inproc://compute-join")
    theirs.connect("inproc://compute-join")
    engine = GatedEngine()
    # Budget 2 with one-character texts: two texts per call.
    thread = threading.Thread(target=ComputeLoop(engine, theirs, 2).run, args=(0.0,), daemon=True)  # type: ignore[arg-type]
    thread.start()
    try:
        ours.send_multipart(encode(Embed(request_id=1, texts=["a", "b", "c"])))
        assert engine.in_first_call.wait(5)
        ours.send_multipart(encode(Embed(request_id=2, texts=["d"])))
        time.sleep(0.05)  # let the message reach the loop's socket before the call ends
        engine.release.set()
        answers = _answers(ours, 2)
        assert all(isinstance(answer, Result) for answer in answers.values())
        assert engine.calls == [["a", "b"], ["c", "d"]]
    finally:
        ours.send_multipart(STOP)
        thread.join(timeout=5)
        ours.close(linger=0)
        context.term()


def test_a_cancelled_request_gets_no_answer_and_its_queued_texts_are_not_computed() -> None:
    context = zmq.Context()
    ours, theirs = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    ours.bind("inproc://compute-cancel")
    theirs.connect("inproc://compute-cancel")
    engine = GatedEngine()
    thread = threading.Thread(target=ComputeLoop(engine, theirs, 1).run, args=(0.0,), daemon=True)  # type: ignore[arg-type]
    thread.start()
    try:
        ours.send_multipart(encode(Embed(request_id=1, texts=["a"])))
        assert engine.in_first_call.wait(5)
        ours.send_multipart(encode(Embed(request_id=2, texts=["x", "y"])))
        ours.send_multipart(encode(Cancel(request_id=2)))
        ours.send_multipart(encode(Embed(request_id=3, texts=["z"])))
        time.sleep(0.05)
        engine.release.set()
        assert set(_answers(ours, 2)) == {1, 3}
        assert not ours.poll(200)
        assert engine.calls == [["a"], ["z"]]
    finally:
        ours.send_multipart(STOP)
        thread.join(timeout=5)
        ours.close(linger=0)
        context.term()
