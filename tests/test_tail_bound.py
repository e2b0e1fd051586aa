"""What bounds issue 17's throughput and p99 ratios (benchmarks/tail_bound.py): Little's law and arrival order."""

from __future__ import annotations

import math

from benchmarks.tail_bound import bounds, fifo_tail_floor, tail_factor


def test_a_p99_equal_to_the_closed_loops_mean_latency_has_tail_factor_one() -> None:
    # 64 clients at 200 texts/s: each text is in the server 320 ms on average.
    assert math.isclose(tail_factor(320.0, 200.0), 1.0)


def test_sentences_of_one_length_leave_no_tail_in_arrival_order() -> None:
    assert math.isclose(fifo_tail_floor(["x" * 40] * 100), 1.0)


def test_sentences_of_mixed_lengths_leave_a_tail_in_arrival_order() -> None:
    texts = ["short words"] * 50 + ["a much longer sentence " * 8] * 50
    assert fifo_tail_floor(texts) > 1.1


def test_an_engine_twice_as_fast_as_llama_server_halves_the_p99_floor() -> None:
    texts = ["short words", "a much longer sentence " * 8] * 50
    level = bounds(100.0, 100.0, 700.0, 100.0, 700.0, texts)
    faster = bounds(200.0, 100.0, 700.0, 100.0, 700.0, texts)
    assert math.isclose(faster.p99_floor, level.p99_floor / 2)
    assert math.isclose(faster.rate_ceiling, 2.0)


def test_the_bounds_line_names_each_bound() -> None:
    line = bounds(200.0, 190.0, 460.0, 195.0, 400.0, ["one text", "another one"] * 10).describe()
    for name in ("ours/llama-server<=", "tail p99*rate/64 ours=", "FIFO floor=", "p99 ours/llama-server>="):
        assert name in line
