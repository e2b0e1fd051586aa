"""How many workers each model gets by default, and how many llama.cpp threads each worker gets.

n_threads_batch defaults to the CPU count, and two workers left at defaults ran 40x slower than one here,
so every worker is told its threads, and their sum stays within WORKER_THREADS_TOTAL (the cores by
default) unless the operator allows oversubscription.

By default (WORKERS_PER_MODEL=auto) the thread budget goes to one-thread workers, shared equally among the
served models. Measured on 2 cores under load from 64 clients (MiniLM): 2 workers x 1 thread served 128-132
texts/s at 13.5 ms of worker CPU per text, 1 worker x 2 threads 101/s at 18 ms. The gateway, the writer and
the clients share those cores, and llama.cpp's threads wait for each other at every step of a call, so a
worker whose second thread lost its core stalls; one-thread workers do not. A lone request takes longer on
one thread (about 14 instead of 8.5 ms for a short MiniLM text): set WORKERS_PER_MODEL=1 to favour that.
"""

from __future__ import annotations


class AllotmentError(ValueError):
    """The requested worker counts do not fit the thread budget."""


def threads_per_worker(total_workers: int, thread_budget: int, allow_oversubscription: bool) -> int:
    """The llama.cpp threads each of `total_workers` workers gets; AllotmentError when they do not fit the budget."""
    if total_workers <= 0:
        return max(1, thread_budget)
    if total_workers > thread_budget and not allow_oversubscription:
        raise AllotmentError(
            f"{total_workers} workers need at least {total_workers} threads but WORKER_THREADS_TOTAL is "
            f"{thread_budget}; use fewer workers or set ALLOW_THREAD_OVERSUBSCRIPTION=true"
        )
    return max(1, thread_budget // total_workers)


def default_workers_per_model(models: int, thread_budget: int) -> int:
    """WORKERS_PER_MODEL=auto: one-thread workers, the thread budget shared equally among `models`."""
    return max(1, thread_budget // max(1, models))
