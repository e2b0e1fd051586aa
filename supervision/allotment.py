"""How many llama.cpp threads each worker gets.

n_threads_batch defaults to the CPU count, and two workers left at defaults ran 40x slower than one here,
so every worker is told its threads, and their sum stays within WORKER_THREADS_TOTAL (the cores by
default) unless the operator allows oversubscription.
"""

from __future__ import annotations


class AllotmentError(ValueError):
    """The requested worker counts do not fit the thread budget."""


def threads_per_worker(total_workers: int, thread_budget: int, allow_oversubscription: bool) -> int:
    if total_workers <= 0:
        return max(1, thread_budget)
    if total_workers > thread_budget and not allow_oversubscription:
        raise AllotmentError(
            f"{total_workers} workers need at least {total_workers} threads but WORKER_THREADS_TOTAL is "
            f"{thread_budget}; use fewer workers or set ALLOW_THREAD_OVERSUBSCRIPTION=true"
        )
    return max(1, thread_budget // total_workers)
