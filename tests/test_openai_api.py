"""The OpenAI-compatible API, through the official `openai` client, on the real system with all-MiniLM-L6-v2."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import openai
import pytest
from openai import OpenAI
from tokenizers import Tokenizer

from tests.conftest import MINILM, ReferenceEngine, Store
from tests.harness import Service, running

pytestmark = pytest.mark.slow

MAX_TOKEN_IDS = 254  # MiniLM's max_tokens (256) less the [CLS] and [SEP] the model adds


@pytest.fixture(scope="module")
def minilm_module(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, database: Store) -> Iterator[Service]:
    """The default model with token-id inputs accepted (ACCEPT_TOKEN_IDS=true, off by default), which these tests
    exercise as well as texts."""
    with running(tmp_path_factory.mktemp("service"), models_dir, MODELS_TO_SERVE=MINILM, ACCEPT_TOKEN_IDS="true",
                 **database.env()) as started:
        yield started


@pytest.fixture(scope="module")
def client(minilm_module: Service) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{minilm_module.base_url}/v1", api_key="not-checked", max_retries=0, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def tokenizer(minilm_tokenizer: Tokenizer) -> Tokenizer:
    return minilm_tokenizer


def token_ids(tokenizer: Tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False).ids


def original_vectors(service: Service, texts: list[str]) -> np.ndarray:
    response = httpx.post(f"{service.base_url}/get_embedding_vectors/", json={"texts": texts, "model_name": MINILM},
                          timeout=60)
    assert response.status_code == 200, response.text
    return np.array(response.json()["embeddings"], dtype=np.float32)


def floats(client: OpenAI, input: str | list[str] | list[int] | list[list[int]],
           dimensions: int | openai.Omit = openai.omit) -> np.ndarray:
    response = client.embeddings.create(input=input, model=MINILM, encoding_format="float", dimensions=dimensions)
    return np.array([item.embedding for item in response.data], dtype=np.float32)


def test_a_string_gets_one_embedding_equal_to_the_original_endpoints(minilm_module: Service, client: OpenAI,
                                                                    minilm_reference: ReferenceEngine) -> None:
    text = "A string first embedded through the OpenAI endpoint."
    response = client.embeddings.create(input=text, model=MINILM, encoding_format="float")
    assert response.object == "list" and response.model == MINILM
    [item] = response.data
    assert item.object == "embedding" and item.index == 0 and len(item.embedding) == 384
    ours = np.array(item.embedding, dtype=np.float32)
    # The original endpoint answers this text from the cache; the engine outside the service computes it afresh.
    assert np.array_equal(ours, original_vectors(minilm_module, [text])[0])
    assert np.allclose(ours, minilm_reference.embed([text])[0], atol=1e-5)


def test_a_list_of_strings_gets_one_embedding_per_text_in_input_order(client: OpenAI,
                                                                       minilm_reference: ReferenceEngine) -> None:
    texts = ["first of three", "second of three", "third of three"]
    response = client.embeddings.create(input=texts, model=MINILM, encoding_format="float")
    assert [item.index for item in response.data] == [0, 1, 2]
    ours = np.array([item.embedding for item in response.data], dtype=np.float32)
    assert np.allclose(ours, minilm_reference.embed(texts), atol=1e-5)


def test_a_list_of_token_ids_embeds_like_the_text_it_came_from(client: OpenAI, tokenizer: Tokenizer) -> None:
    text = "Token ids come from the model's own tokenizer."
    from_ids = floats(client, token_ids(tokenizer, text))
    from_text = floats(client, text)
    assert from_ids.shape == (1, 384)
    assert np.allclose(from_ids, from_text, atol=1e-5)


def test_a_list_of_token_id_lists_gets_one_embedding_per_list_in_order(client: OpenAI, tokenizer: Tokenizer) -> None:
    texts = ["the first token list", "a second, different one"]
    from_ids = floats(client, [token_ids(tokenizer, text) for text in texts])
    assert from_ids.shape == (2, 384)
    assert np.allclose(from_ids, floats(client, texts), atol=1e-5)


def test_base64_is_the_little_endian_float32_bytes_of_the_float_answer(client: OpenAI) -> None:
    encoded = client.embeddings.create(input="encode me", model=MINILM, encoding_format="base64").data[0].embedding
    assert isinstance(encoded, str)
    decoded = np.frombuffer(base64.b64decode(encoded), dtype="<f4")
    assert np.array_equal(decoded, floats(client, "encode me")[0])


def test_base64_token_id_answers_decode_to_the_same_floats(client: OpenAI, tokenizer: Tokenizer) -> None:
    ids = token_ids(tokenizer, "base64 for token ids")
    encoded = client.embeddings.create(input=[ids], model=MINILM, encoding_format="base64").data[0].embedding
    decoded = np.frombuffer(base64.b64decode(str(encoded)), dtype="<f4")
    assert np.array_equal(decoded, floats(client, [ids])[0])


def test_the_clients_default_encoding_decodes_to_the_float_answer(client: OpenAI) -> None:
    # Without encoding_format the client asks for base64 and decodes it itself.
    response = client.embeddings.create(input=["default one", "default two"], model=MINILM)
    ours = np.array([item.embedding for item in response.data], dtype=np.float32)
    assert np.array_equal(ours, floats(client, ["default one", "default two"]))


def test_dimensions_keeps_the_first_components_renormalised(client: OpenAI) -> None:
    full = floats(client, "shorten me")[0]
    short = floats(client, "shorten me", dimensions=64)[0]
    assert short.shape == (64,)
    assert abs(np.linalg.norm(short) - 1.0) < 1e-5
    assert np.allclose(short, full[:64] / np.linalg.norm(full[:64]), atol=1e-6)


def test_dimensions_above_the_models_are_rejected_naming_the_param(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.embeddings.create(input="too many", model=MINILM, dimensions=385)
    assert raised.value.param == "dimensions" and "384" in raised.value.message


def test_usage_counts_the_tokens_the_model_embedded_with_its_special_tokens(client: OpenAI) -> None:
    response = client.embeddings.create(input=["Hello world", "Hello"], model=MINILM)
    assert response.usage.prompt_tokens == (2 + 2) + (1 + 2)  # [CLS] ... [SEP] around each
    assert response.usage.total_tokens == response.usage.prompt_tokens


def test_usage_of_a_cached_text_is_the_count_from_when_it_was_computed(client: OpenAI) -> None:
    first = client.embeddings.create(input="counted once, remembered after", model=MINILM)
    again = client.embeddings.create(input="counted once, remembered after", model=MINILM)
    assert first.usage.prompt_tokens > 0
    assert again.usage.prompt_tokens == first.usage.prompt_tokens


def test_usage_of_token_ids_counts_them_with_the_special_tokens(client: OpenAI) -> None:
    response = client.embeddings.create(input=[[7592, 2088], [7592]], model=MINILM)
    assert response.usage.prompt_tokens == (2 + 2) + (1 + 2)


def test_a_text_embedded_through_the_openai_api_is_cached_for_the_original_endpoint(minilm_module: Service,
                                                                                     client: OpenAI) -> None:
    client.embeddings.create(input="shared cache between both APIs", model=MINILM)
    assert minilm_module.embed("shared cache between both APIs", MINILM)["cached"] is True


def test_an_unknown_model_gets_404_model_not_found(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client.embeddings.create(input="x", model="text-embedding-3-small")
    error = raised.value
    assert error.code == "model_not_found" and error.param == "model" and error.type == "invalid_request_error"
    assert MINILM in error.message


def test_errors_have_exactly_openais_four_fields(minilm_module: Service) -> None:
    response = httpx.post(f"{minilm_module.base_url}/v1/embeddings", json={"input": 5, "model": MINILM})
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["param"] == "input" and body["error"]["type"] == "invalid_request_error"


def test_malformed_json_gets_400_in_openai_form(minilm_module: Service) -> None:
    response = httpx.post(f"{minilm_module.base_url}/v1/embeddings", content=b"{not json")
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]["message"]


def test_a_missing_model_gets_400_naming_the_param(minilm_module: Service) -> None:
    response = httpx.post(f"{minilm_module.base_url}/v1/embeddings", json={"input": "x"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "model"


def test_an_empty_input_list_is_rejected(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.embeddings.create(input=[], model=MINILM)
    assert raised.value.param == "input"


def test_a_token_id_outside_the_vocabulary_is_rejected_naming_it(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.embeddings.create(input=[[101, 2088], [101, 30522]], model=MINILM)
    assert raised.value.param == "input"
    assert raised.value.body["message"].startswith(  # type: ignore[index]  # the error object of OpenAI's body
        f"input[1] holds token id 30522, outside the vocabulary of '{MINILM}' (0-30521); token ids must come from "
        "this model's tokenizer")
    assert "check_embedding_ctx_length=False" in raised.value.message  # the fix for the client that sends them


def test_more_token_ids_than_the_model_takes_are_rejected(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.embeddings.create(input=[1037] * (MAX_TOKEN_IDS + 1), model=MINILM)
    assert raised.value.param == "input" and str(MAX_TOKEN_IDS) in raised.value.message


def test_exactly_as_many_token_ids_as_the_model_takes_are_embedded(client: OpenAI) -> None:
    response = client.embeddings.create(input=[1037] * MAX_TOKEN_IDS, model=MINILM)
    assert response.usage.prompt_tokens == 256


def test_the_original_endpoints_keep_their_detail_errors(minilm_module: Service) -> None:
    response = httpx.post(f"{minilm_module.base_url}/get_embedding_vector/", json={"text": "x", "model_name": "nope"})
    assert response.status_code == 422 and "detail" in response.json()


def test_models_are_listed_in_openai_form(client: OpenAI) -> None:
    models = list(client.models.list())
    assert [model.id for model in models] == [MINILM]
    assert all(model.object == "model" for model in models)


def test_openapi_document_describes_the_openai_endpoints(minilm_module: Service) -> None:
    document = httpx.get(f"{minilm_module.base_url}/openapi.json").json()
    operation = document["paths"]["/v1/embeddings"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("OpenAIEmbeddingRequest")
    assert operation["responses"]["404"]["content"]["application/json"]["schema"]["$ref"].endswith("OpenAIErrorResponse")
    assert "/v1/models" in document["paths"]
