"""The worker's engine on the real models: batching, truncation and normalisation."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from modelstore.catalogue import load_catalogue
from tests.conftest import MINILM, SMOLLM
from workers.embedder.engine import Engine, EngineConfig

pytestmark = pytest.mark.slow


def _engine(models_dir: Path, name: str) -> Engine:
    entry = load_catalogue(models_dir)[name]
    return Engine(EngineConfig(str(entry.installed_path(models_dir)), entry.pooling, entry.max_tokens,
                               threads=1, token_budget=512))


@pytest.fixture(scope="module")
def smollm(models_dir: Path) -> Iterator[Engine]:
    engine = _engine(models_dir, SMOLLM)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def minilm(models_dir: Path) -> Iterator[Engine]:
    engine = _engine(models_dir, MINILM)
    yield engine
    engine.close()


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("name", [SMOLLM, MINILM])
def test_a_text_alone_and_inside_a_batch_agree(name: str, smollm: Engine, minilm: Engine) -> None:
    engine = smollm if name == SMOLLM else minilm
    text = "A sentence embedded on its own and then again among others."
    others = ["Short.", "Another, somewhat longer companion sentence for the batch.", "Third one here."]
    alone = engine.embed([engine.tokenize(text)])[0]
    batch = engine.embed([engine.tokenize(t) for t in [*others, text]])
    assert _cos(alone, batch[3]) >= 0.999


def test_smollm2_vectors_are_576_dimensional_and_normalised(smollm: Engine) -> None:
    vectors = smollm.embed([smollm.tokenize("Hello world"), smollm.tokenize("")])
    assert vectors.shape == (2, 576)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_long_input_is_truncated_to_max_tokens_keeping_the_separator(minilm: Engine) -> None:
    tokens = minilm.tokenize("word " * 1000)
    assert len(tokens) == minilm.max_tokens == 256
    assert tokens[-1] == minilm.tokenize("")[-1]  # [SEP]
