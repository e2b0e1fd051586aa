"""The worker's compute thread, routing only (a fake engine): failures stay with the requests they hit."""

from __future__ import annotations

import threading

import numpy as np
import zmq

from shared.protocol import Embed, Failure, Result, decode, encode
from workers.embedder.process import _compute_loop


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
    thread = threading.Thread(target=_compute_loop, args=(FakeEngine(), theirs, 0.05, 4), daemon=True)
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
        ours.send_multipart([b"stop"])
        thread.join(timeout=5)
        ours.close(linger=0)
        context.term()
