"""What bounds the throughput and p99 ratios of issue 17, from figures of the same run.

A closed loop of `c` clients (wrk at concurrency 64) keeps `c` texts in the server, so by Little's law a text's
mean latency is c / rate. The tail factor p99 * rate / c says how far the slowest percent lies above that mean,
whatever the rate. A server that serves in arrival order answers a text once the texts ahead of it and the text
itself are done: about c texts' work, so its p99 / mean is at least that of the sum of c texts' lengths drawn
from the sentences sent (the FIFO floor). Serving short texts first lowers their latency only by raising the
long ones', which are the p99.

Together: p99 ours / p99 llama-server = (tail ours / tail llama-server) * (rate llama-server / rate ours), and
ours cannot serve faster than the engine, so no scheduler in arrival order gets below
(FIFO floor / tail llama-server) * (rate llama-server / rate engine-best).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

CONCURRENCY = 64


def tail_factor(p99_ms: float, texts_per_second: float, concurrency: int = CONCURRENCY) -> float:
    """p99 over the mean latency Little's law gives a closed loop of `concurrency` clients at that rate."""
    return p99_ms * texts_per_second / (concurrency * 1000.0)


def fifo_tail_floor(texts: list[str], concurrency: int = CONCURRENCY, draws: int = 20_000, seed: int = 0) -> float:
    """p99 / mean of the characters in `concurrency` texts drawn from `texts`: the work one text waits on in
    arrival order. Characters stand in for tokens (a text's cost grows with them)."""
    lengths = [len(text) for text in texts]
    pick = random.Random(seed)
    sums = sorted(sum(pick.choices(lengths, k=concurrency)) for _ in range(draws))
    return sums[int(0.99 * (draws - 1))] / (sum(sums) / draws)


@dataclass(frozen=True)
class Bounds:
    """The ceilings issue 17's ratios meet on one machine, beside the ratios themselves."""

    rate_ceiling: float  # engine-best / llama-server: the most ours / llama-server can reach
    tail_ours: float
    tail_native: float
    fifo_floor: float
    p99_floor: float  # the least p99 ours / llama-server arrival order allows at the engine's rate

    def describe(self) -> str:
        """The BOUNDS line printed beside a RATIOS line."""
        return (f"ours/llama-server<={self.rate_ceiling:.2f} (engine-best/llama-server) "
                f"tail p99*rate/64 ours={self.tail_ours:.2f} llama-server={self.tail_native:.2f} "
                f"FIFO floor={self.fifo_floor:.2f} -> p99 ours/llama-server>={self.p99_floor:.2f}")


def bounds(engine_rate: float, native_rate: float, native_p99_ms: float, ours_rate: float, ours_p99_ms: float,
           texts: list[str]) -> Bounds:
    """The bounds of one round, from its engine, llama-server and ours figures and the sentences sent."""
    tail_native = tail_factor(native_p99_ms, native_rate)
    floor = fifo_tail_floor(texts)
    return Bounds(engine_rate / native_rate, tail_factor(ours_p99_ms, ours_rate), tail_native, floor,
                  floor / tail_native * native_rate / engine_rate)
