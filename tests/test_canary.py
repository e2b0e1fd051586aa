"""The start-up canary (workers/embedder/canary.py): real child processes, real segfaults, verdicts kept once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from modelstore.catalogue import load_catalogue
from tests.conftest import MINILM, SMOLLM
from workers.embedder.canary import choose_loading, crash_requested
from workers.embedder.engine import EngineConfig

pytestmark = pytest.mark.slow


def _config(models_dir: Path, name: str = MINILM, path: Path | None = None) -> EngineConfig:
    entry = load_catalogue(models_dir)[name]
    return EngineConfig(str(path or entry.installed_path(models_dir)), entry.pooling, entry.max_tokens, threads=1,
                        token_budget=entry.batch_tokens, flash_attention=entry.flash_attention)


@pytest.mark.parametrize("name", [MINILM, SMOLLM])
def test_auto_keeps_weight_repacking_on_where_the_canary_embeds(models_dir: Path, tmp_path: Path, name: str) -> None:
    verdict = choose_loading(_config(models_dir, name), "auto", tmp_path, name)
    assert (verdict.weight_repack, verdict.trials) == (True, {"repacking on": "ok"})


def test_auto_falls_back_to_no_repacking_when_the_repacked_canary_segfaults(models_dir: Path, tmp_path: Path) -> None:
    verdict = choose_loading(_config(models_dir), "auto", tmp_path, MINILM, crash_spec=f"{MINILM}:repack")
    assert verdict.weight_repack is False
    assert verdict.trials == {"repacking on": "killed by SIGSEGV", "repacking off": "ok"}


def test_a_model_that_crashes_with_every_loading_gets_no_loading_and_a_reason(models_dir: Path, tmp_path: Path) -> None:
    verdict = choose_loading(_config(models_dir), "auto", tmp_path, MINILM, crash_spec=f"{MINILM}:always")
    assert verdict.weight_repack is None
    assert "weight repacking on: killed by SIGSEGV; weight repacking off: killed by SIGSEGV" in verdict.failure


def test_on_never_falls_back(models_dir: Path, tmp_path: Path) -> None:
    verdict = choose_loading(_config(models_dir), "on", tmp_path, MINILM, crash_spec=f"{MINILM}:repack")
    assert (verdict.weight_repack, verdict.trials) == (None, {"repacking on": "killed by SIGSEGV"})


def test_off_tries_only_the_safe_loading(models_dir: Path, tmp_path: Path) -> None:
    verdict = choose_loading(_config(models_dir), "off", tmp_path, MINILM, crash_spec=f"{MINILM}:repack")
    assert (verdict.weight_repack, verdict.trials) == (False, {"repacking off": "ok"})


def test_a_verdict_is_found_once_and_then_recalled_without_a_child(models_dir: Path, tmp_path: Path) -> None:
    config = _config(models_dir)
    first = choose_loading(config, "auto", tmp_path, MINILM, crash_spec=f"{MINILM}:repack")
    # Were a child run again, it would now crash with either loading; the kept verdict answers instead.
    again = choose_loading(config, "auto", tmp_path, MINILM, crash_spec=f"{MINILM}:always")
    assert again == first
    assert json.loads((tmp_path / f"{MINILM}.json").read_text())["trials"] == first.trials


def test_another_model_file_is_tried_again(models_dir: Path, tmp_path: Path) -> None:
    choose_loading(_config(models_dir), "auto", tmp_path / "verdicts", MINILM, crash_spec=f"{MINILM}:repack")
    other = tmp_path / "other.gguf"
    shutil.copyfile(_config(models_dir, SMOLLM).model_path, other)
    verdict = choose_loading(_config(models_dir, path=other), "auto", tmp_path / "verdicts", MINILM)
    assert verdict.trials == {"repacking on": "ok"}


def test_a_broken_model_file_fails_with_the_loader_error_not_a_signal(tmp_path: Path, models_dir: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 4096)
    verdict = choose_loading(_config(models_dir, path=broken), "auto", tmp_path / "verdicts", MINILM)
    assert verdict.weight_repack is None
    assert verdict.trials["repacking on"].startswith("failed: ValueError: Failed to load model")


def test_the_test_only_crash_setting_names_a_model_and_when() -> None:
    spec = f"{SMOLLM}:repack, {MINILM}:always"
    assert crash_requested(spec, SMOLLM, weight_repack=True)
    assert not crash_requested(spec, SMOLLM, weight_repack=False)
    assert crash_requested(spec, MINILM, weight_repack=False)
    assert not crash_requested("", MINILM, weight_repack=True)
