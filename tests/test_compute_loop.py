"""The worker's compute thread, routing only (a fake engine): which texts share a call, and failures stay
with the requests they hit."""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import zmq

from shared.protocol import Answer, Cancel, Embed, Failure, Message, Results, Tokenize, Tokens, decode
from workers.embedder.compute import ComputeLoop, Finished, Inbox, Work

_PIPES = itertools.count()


class FakeEngine:
    """Tokenises by characters; a text's vector is (its first token, its length); refuses any call that contains
    the text "boom"."""

    dimensions = 2
    max_sequences = 8

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) for c in text] or [0]

    def token_ids(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if text == "untokenisable":
            raise ValueError("bad bytes")
        return [ord(c) for c in text] + ([0] if add_special_tokens else [])

    def embed(self, sequences: list[list[int]]) -> np.ndarray:
        if any(seq == [ord(c) for c in "boom"] for seq in sequences):
            raise RuntimeError("decode failed")
        return np.array([[seq[0], len(seq)] for seq in sequences], dtype=np.float32)


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


@dataclass
class Pipes:
    """The I/O thread's ends: the compute thread's inbox, and the socket its answers come back on."""

    inbox: Inbox
    answers: zmq.Socket


@contextmanager
def compute_thread(engine: FakeEngine, token_budget: int) -> Iterator[Pipes]:
    """A running compute loop and the I/O thread's ends of its pipes; stopped and closed afterwards."""
    context = zmq.Context()
    address = f"inproc://compute-test-{next(_PIPES)}"
    ours, theirs = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    ours.bind(address)
    theirs.connect(address)
    inbox: Inbox = queue.SimpleQueue()
    loop = ComputeLoop(engine, inbox, theirs, token_budget)  # type: ignore[arg-type]  # a fake engine stands in for Engine
    thread = threading.Thread(target=loop.run, args=(0.0,), daemon=True)
    thread.start()
    try:
        yield Pipes(inbox, ours)
        assert thread.is_alive()
    finally:
        inbox.put(None)
        thread.join(timeout=5)
        ours.close(linger=0)
        context.term()


def _by_request(message: Message) -> list[tuple[int, object]]:
    """Each request an answer on the pipe ends, with what it got: an Answer of a RESULTS, a FAILURE, TOKENS."""
    if isinstance(message, Results):
        return list(message.answers())
    assert isinstance(message, (Failure, Tokens))
    return [(message.request_id, message)]


def _next_answer(pipes: Pipes) -> Message:
    assert pipes.answers.poll(5000), "no answer"
    return decode(pipes.answers.recv_multipart()[1:])


def _answers(pipes: Pipes, count: int) -> dict[int, object]:
    answers: dict[int, object] = {}
    while len(answers) < count:
        assert pipes.answers.poll(5000), f"no answer; got {answers}"
        envelope, *frames = pipes.answers.recv_multipart()
        ended = _by_request(decode(frames))
        assert Finished.unpack(envelope).request_ids == tuple(request_id for request_id, _ in ended)
        answers.update(ended)
    return answers


def test_the_finished_frame_counts_the_texts_and_tokens_of_a_result() -> None:
    with compute_thread(FakeEngine(), 64) as pipes:
        pipes.inbox.put(Work(0, Embed(request_id=9, texts=["ab", "cde"])))
        assert pipes.answers.poll(5000)
        envelope, *_ = pipes.answers.recv_multipart()
        assert Finished.unpack(envelope) == Finished(gateway=0, request_ids=(9,), texts=2, tokens=5)


def test_the_requests_one_call_finishes_come_back_in_one_results_each_with_its_own_rows() -> None:
    engine = GatedEngine()
    with compute_thread(engine, 64) as pipes:
        pipes.inbox.put(Work(0, Embed(request_id=1, texts=["a"])))
        assert engine.in_first_call.wait(5)
        for request_id, texts in ((2, ["b", "c"]), (3, ["d"])):
            pipes.inbox.put(Work(0, Embed(request_id=request_id, texts=texts)))
        time.sleep(0.05)  # both wait for the call in progress, so they share the next one
        engine.release.set()
        first, second = _next_answer(pipes), _next_answer(pipes)
        assert engine.calls == [["a"], ["b", "c", "d"]]
        assert isinstance(first, Results) and first.request_ids == [1]
        assert isinstance(second, Results) and second.request_ids == [2, 3] and second.rows == [2, 1]
        answers = dict(second.answers())
        assert answers[2].token_counts == [1, 1] and answers[2].vectors.shape == (2, engine.dimensions)
        assert answers[3].vectors.tolist() == [[ord("d"), 1]]


def test_a_failed_llama_call_fails_its_requests_and_the_others_are_answered() -> None:
    # A token budget of 4 puts "boom" in a call of its own, so only request 2 meets the failure.
    with compute_thread(FakeEngine(), 4) as pipes:
        for request_id, text in ((1, "fine"), (2, "boom"), (3, "also")):
            pipes.inbox.put(Work(0, Embed(request_id=request_id, texts=[text])))
        answers = _answers(pipes, 3)
        assert isinstance(answers[2], Failure) and "decode failed" in answers[2].reason
        assert isinstance(answers[1], Answer) and isinstance(answers[3], Answer)


def test_a_request_arriving_during_a_call_shares_the_next_call_with_queued_texts() -> None:
    engine = GatedEngine()
    with compute_thread(engine, 2) as pipes:  # one-character texts: two per call
        pipes.inbox.put(Work(0, Embed(request_id=1, texts=["a", "b", "c"])))
        assert engine.in_first_call.wait(5)
        pipes.inbox.put(Work(0, Embed(request_id=2, texts=["d"])))
        time.sleep(0.05)  # let the message reach the loop's socket before the call ends
        engine.release.set()
        answers = _answers(pipes, 2)
        assert all(isinstance(answer, Answer) for answer in answers.values())
        assert engine.calls == [["a", "b"], ["c", "d"]]


def test_a_cancelled_request_gets_no_answer_and_its_queued_texts_are_not_computed() -> None:
    engine = GatedEngine()
    with compute_thread(engine, 1) as pipes:
        pipes.inbox.put(Work(0, Embed(request_id=1, texts=["a"])))
        assert engine.in_first_call.wait(5)
        pipes.inbox.put(Work(0, Embed(request_id=2, texts=["x", "y"])))
        pipes.inbox.put(Work(0, Cancel(request_id=2)))
        pipes.inbox.put(Work(0, Embed(request_id=3, texts=["z"])))
        time.sleep(0.05)
        engine.release.set()
        assert set(_answers(pipes, 2)) == {1, 3}
        assert not pipes.answers.poll(200)
        assert engine.calls == [["a"], ["z"]]


def _answer_order(pipes: Pipes, count: int) -> list[int]:
    order: list[int] = []
    for _ in range(count):
        assert pipes.answers.poll(5000), f"no answer after {order}"
        _, *frames = pipes.answers.recv_multipart()
        order += [request_id for request_id, _ in _by_request(decode(frames))]
    return order


def test_a_tokenize_waits_for_the_call_in_progress_but_not_for_queued_texts() -> None:
    engine = GatedEngine()
    with compute_thread(engine, 1) as pipes:  # one text per call: request 2 needs a call of its own
        pipes.inbox.put(Work(0, Embed(request_id=1, texts=["a"])))
        assert engine.in_first_call.wait(5)
        pipes.inbox.put(Work(0, Embed(request_id=2, texts=["b"])))
        pipes.inbox.put(Work(0, Tokenize(request_id=3, texts=["hi"])))
        time.sleep(0.05)
        engine.release.set()
        assert _answer_order(pipes, 3) == [1, 3, 2]
        assert engine.calls == [["a"], ["b"]]  # tokenizing made no llama.cpp call


def test_a_tokenize_answers_each_texts_ids_in_order() -> None:
    with compute_thread(FakeEngine(), 64) as pipes:
        pipes.inbox.put(Work(0, Tokenize(request_id=4, texts=["ab", ""], add_special_tokens=False)))
        [answer] = _answers(pipes, 1).values()
        assert answer == Tokens(request_id=4, token_ids=[[97, 98], []])


def test_an_untokenisable_text_fails_its_tokenize_and_the_worker_goes_on() -> None:
    with compute_thread(FakeEngine(), 64) as pipes:
        pipes.inbox.put(Work(0, Tokenize(request_id=5, texts=["fine", "untokenisable"])))
        pipes.inbox.put(Work(0, Tokenize(request_id=6, texts=["next"])))
        answers = _answers(pipes, 2)
        assert isinstance(answers[5], Failure) and "bad bytes" in answers[5].reason
        assert isinstance(answers[6], Tokens)
