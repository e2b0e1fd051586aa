"""The worker's engine on the real models: batching, truncation and normalisation.

Each engine lives in a child process (tests/child_object.py): a llama.cpp crash fails these tests, not the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from modelstore.catalogue import load_catalogue
from tests.child_object import ChildObject
from tests.conftest import MINILM, SMOLLM
from workers.embedder.engine import Engine, EngineConfig

pytestmark = pytest.mark.slow


class ChildEngine:
    """The calls these tests make, each run by an Engine in a child process."""

    def __init__(self, config: EngineConfig) -> None:
        self._child = ChildObject(Engine, config)
        self.max_tokens: int = self._child.get("max_tokens")

    def tokenize(self, text: str) -> list[int]:
        return self._child.call("tokenize", text)

    def embed(self, sequences: list[list[int]]) -> np.ndarray:
        return self._child.call("embed", sequences)

    def close(self) -> None:
        self._child.apply(Engine.close)
        self._child.close()


def _engine(models_dir: Path, name: str) -> Iterator[ChildEngine]:
    entry = load_catalogue(models_dir)[name]
    yield from _engine_from(EngineConfig(str(entry.installed_path(models_dir)), entry.pooling, entry.max_tokens,
                                         threads=1, token_budget=512))


def _engine_from(config: EngineConfig) -> Iterator[ChildEngine]:
    engine = ChildEngine(config)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def smollm(models_dir: Path) -> Iterator[ChildEngine]:
    yield from _engine(models_dir, SMOLLM)


@pytest.fixture(scope="module")
def minilm(models_dir: Path) -> Iterator[ChildEngine]:
    yield from _engine(models_dir, MINILM)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("name", [SMOLLM, MINILM])
def test_a_text_alone_and_inside_a_batch_agree(name: str, smollm: ChildEngine, minilm: ChildEngine) -> None:
    engine = smollm if name == SMOLLM else minilm
    text = "A sentence embedded on its own and then again among others."
    others = ["Short.", "Another, somewhat longer companion sentence for the batch.", "Third one here."]
    alone = engine.embed([engine.tokenize(text)])[0]
    batch = engine.embed([engine.tokenize(t) for t in [*others, text]])
    assert _cos(alone, batch[3]) >= 0.999


def test_smollm2_vectors_are_576_dimensional_and_normalised(smollm: ChildEngine) -> None:
    vectors = smollm.embed([smollm.tokenize("Hello world"), smollm.tokenize("")])
    assert vectors.shape == (2, 576)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_long_input_is_truncated_to_max_tokens_keeping_the_separator(minilm: ChildEngine) -> None:
    tokens = minilm.tokenize("word " * 1000)
    assert len(tokens) == minilm.max_tokens == 256
    assert tokens[-1] == minilm.tokenize("")[-1]  # [SEP]


@pytest.mark.parametrize("name", [SMOLLM, MINILM])
def test_weights_loaded_with_and_without_repacking_give_the_same_vectors(models_dir: Path, name: str) -> None:
    entry = load_catalogue(models_dir)[name]
    vectors = []
    for repack in (True, False):
        config = EngineConfig(str(entry.installed_path(models_dir)), entry.pooling, entry.max_tokens, threads=1,
                              token_budget=512, weight_repack=repack)
        for engine in _engine_from(config):
            vectors.append(engine.embed([engine.tokenize(text) for text in ("Hello world", "Repacking is a layout.")]))
    assert np.allclose(vectors[0], vectors[1], atol=1e-4)
