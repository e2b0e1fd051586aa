"""Engine tests run llama.cpp in a child process: a crash there fails the calling test and the run goes on."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelstore.catalogue import load_catalogue
from tests.child_object import ChildDied, ChildObject
from tests.conftest import MINILM
from workers.embedder.engine import Engine, EngineConfig

pytestmark = pytest.mark.slow


def _config(models_dir: Path, crash_on_embed: bool) -> EngineConfig:
    entry = load_catalogue(models_dir)[MINILM]
    return EngineConfig(str(entry.installed_path(models_dir)), entry.pooling, entry.max_tokens, threads=1,
                        token_budget=128, crash_on_embed=crash_on_embed)


def test_a_segfault_in_the_child_raises_child_died_naming_the_signal(models_dir: Path) -> None:
    engine = ChildObject(Engine, _config(models_dir, crash_on_embed=True))
    try:
        tokens = engine.call("tokenize", "this call works")
        with pytest.raises(ChildDied, match="killed by SIGSEGV"):
            engine.call("embed", [tokens])
    finally:
        engine.close()


def test_the_test_process_goes_on_to_embed_after_a_child_crashed(models_dir: Path) -> None:
    crashing = ChildObject(Engine, _config(models_dir, crash_on_embed=True))
    with pytest.raises(ChildDied):
        crashing.call("embed", [[101, 102]])
    crashing.close()
    engine = ChildObject(Engine, _config(models_dir, crash_on_embed=False))
    try:
        vectors = engine.call("embed", [engine.call("tokenize", "Hello world")])
        assert vectors.shape == (1, 384)
    finally:
        engine.close()
