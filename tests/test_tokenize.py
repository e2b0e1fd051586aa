"""POST /tokenize on the real system with all-MiniLM-L6-v2: the model's own token ids, from its workers."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from tokenizers import Tokenizer

from tests.conftest import MINILM
from tests.harness import Service

pytestmark = pytest.mark.slow

CLS, SEP = 101, 102


@pytest.fixture(scope="module")
def tokenizer(minilm_tokenizer: Tokenizer) -> Tokenizer:
    return minilm_tokenizer


def tokenize(service: Service, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{service.base_url}/tokenize", json=body, timeout=60)


def test_a_text_gets_the_models_ids_with_its_special_tokens(minilm_module: Service, tokenizer: Tokenizer) -> None:
    text = "Tokenizers split words into pieces."
    response = tokenize(minilm_module, {"model": MINILM, "input": text})
    assert response.status_code == 200, response.text
    [item] = response.json()["data"]
    assert item["tokens"] == tokenizer.encode(text).ids
    assert item["tokens"][0] == CLS and item["tokens"][-1] == SEP
    assert item["count"] == len(item["tokens"])


def test_without_special_tokens_the_ids_are_the_texts_own(minilm_module: Service, tokenizer: Tokenizer) -> None:
    text = "Nothing added around these words."
    response = tokenize(minilm_module, {"model": MINILM, "input": text, "add_special_tokens": False})
    assert response.json()["data"][0]["tokens"] == tokenizer.encode(text, add_special_tokens=False).ids


def test_a_list_of_texts_gets_one_entry_per_text_in_order(minilm_module: Service, tokenizer: Tokenizer) -> None:
    texts = ["first", "the second text", ""]
    data = tokenize(minilm_module, {"model": MINILM, "input": texts}).json()["data"]
    assert [item["index"] for item in data] == [0, 1, 2]
    assert [item["tokens"] for item in data] == [tokenizer.encode(text).ids for text in texts]


def test_a_text_longer_than_the_model_takes_is_counted_whole(minilm_module: Service) -> None:
    answer = tokenize(minilm_module, {"model": MINILM, "input": "word " * 400}).json()
    assert answer["max_tokens"] == 256
    assert answer["data"][0]["count"] == 402  # not truncated: the client sees it must cut 146


def test_the_count_is_what_v1_embeddings_counts_for_the_text(minilm_module: Service) -> None:
    text = "Counted by /tokenize and then by /v1/embeddings, computed for the first time."
    count = tokenize(minilm_module, {"model": MINILM, "input": text}).json()["data"][0]["count"]
    embedded = httpx.post(f"{minilm_module.base_url}/v1/embeddings", json={"model": MINILM, "input": text}, timeout=60)
    assert embedded.json()["usage"]["prompt_tokens"] == count


def test_an_unknown_model_gets_404_in_openai_form(minilm_module: Service) -> None:
    response = tokenize(minilm_module, {"model": "no-such-model", "input": "x"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("body, param", [
    ({"model": MINILM, "input": 42}, "input"),
    ({"model": MINILM, "input": []}, "input"),
    ({"model": MINILM, "input": ["a", 1]}, "input"),
    ({"input": "x"}, "model"),
    ({"model": MINILM, "input": "x", "add_special_tokens": "maybe"}, "add_special_tokens"),
])
def test_bad_input_gets_400_naming_the_field(minilm_module: Service, body: dict[str, Any], param: str) -> None:
    response = tokenize(minilm_module, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
