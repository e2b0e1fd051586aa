"""The worker's engine on the real models: batching, truncation and normalisation."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from modelstore.catalogue import load_catalogue
from tests.conftest import MINILM, SMOLLM
from workers.embedder.batcher import Item, plan_groups
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


def test_groups_respect_the_token_budget_and_keep_every_item() -> None:
    items = [Item(request_id=i // 3, index=i % 3, tokens=[0] * (5 + i)) for i in range(12)]
    groups = plan_groups(items, token_budget=40, max_sequences=4)
    assert sorted((it.request_id, it.index) for g in groups for it in g) == sorted((it.request_id, it.index) for it in items)
    for group in groups:
        assert len(group) <= 4
        assert sum(len(it.tokens) for it in group) <= 40 or len(group) == 1


def test_an_item_longer_than_the_budget_forms_a_group_alone() -> None:
    groups = plan_groups([Item(0, 0, [0] * 100), Item(1, 0, [0] * 3)], token_budget=10, max_sequences=8)
    assert [len(g) for g in groups] == [1, 1]
