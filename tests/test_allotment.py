"""Thread allotment: workers × threads stays within the budget unless the operator allows more."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.settings import load_settings
from supervision.allotment import AllotmentError, default_workers_per_model, threads_per_worker


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


def test_by_default_one_model_gets_one_thread_workers_filling_the_budget() -> None:
    assert default_workers_per_model(models=1, thread_budget=2) == 2
    assert default_workers_per_model(models=1, thread_budget=8) == 8


def test_by_default_several_models_share_the_budget_with_at_least_one_worker_each() -> None:
    assert default_workers_per_model(models=2, thread_budget=2) == 1
    assert default_workers_per_model(models=3, thread_budget=2) == 1


def test_workers_per_model_is_auto_by_default_and_a_number_is_taken_as_is(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKERS_PER_MODEL", raising=False)
    config = tmp_path / "none.env"
    assert load_settings(config).workers_per_model == 0  # auto
    assert load_settings(config, {"WORKERS_PER_MODEL": "auto"}).workers_per_model == 0
    assert load_settings(config, {"WORKERS_PER_MODEL": "3"}).workers_per_model == 3


def test_a_negative_worker_count_is_refused() -> None:
    with pytest.raises(ValueError, match="WORKERS_PER_MODEL"):
        load_settings(None, {"WORKERS_PER_MODEL": "-1"})
