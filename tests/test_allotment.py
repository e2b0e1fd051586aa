"""Thread allotment: workers × threads stays within the budget unless the operator allows more."""

from __future__ import annotations

import pytest

from supervision.allotment import AllotmentError, threads_per_worker


def test_one_worker_gets_the_whole_budget() -> None:
    assert threads_per_worker(1, 2, False) == 2


def test_workers_share_the_budget_equally() -> None:
    assert threads_per_worker(2, 2, False) == 1
    assert threads_per_worker(3, 8, False) == 2


def test_more_workers_than_threads_is_refused_with_the_setting_named() -> None:
    with pytest.raises(AllotmentError, match="WORKER_THREADS_TOTAL"):
        threads_per_worker(3, 2, False)


def test_oversubscription_when_allowed_gives_each_worker_one_thread() -> None:
    assert threads_per_worker(3, 2, True) == 1
