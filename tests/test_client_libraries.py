"""The frameworks people point at /v1/embeddings, from PyPI, against the real system with all-MiniLM-L6-v2.

Each test compares a library's vectors with the service's native endpoint and with the engine run outside the
service (minilm_reference), so a library that sent something else (token ids, another model, a reordered batch)
fails here even though the service caches what it computed.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from langchain_openai import OpenAIEmbeddings
from llama_index.embeddings.openai_like import OpenAILikeEmbedding

from tests.conftest import MINILM, ReferenceEngine
from tests.harness import Service
from tests.offline_tiktoken import fill_cache

pytestmark = pytest.mark.slow

DOCUMENTS = [
    "The cat sat on the warm windowsill all afternoon.",
    "Quarterly revenue grew by twelve percent over the last year.",
    "Preheat the oven before you put the bread in.",
]
QUERY = "How much did the company's sales increase?"


def native_vectors(service: Service, texts: list[str]) -> np.ndarray:
    response = httpx.post(f"{service.base_url}/get_embedding_vectors/", json={"texts": texts, "model_name": MINILM},
                          timeout=60)
    assert response.status_code == 200, response.text
    return np.array(response.json()["embeddings"], dtype=np.float32)


def assert_same_vectors(got: list[list[float]], service: Service, reference: ReferenceEngine,
                        texts: list[str]) -> None:
    vectors = np.array(got, dtype=np.float32)
    assert vectors.shape == (len(texts), 384)
    assert np.allclose(vectors, native_vectors(service, texts), atol=1e-6)
    # Computed outside the service: the same up to the float noise of a different batch (llama.cpp's sums run in
    # another order when other sequences share the call).
    cosines = np.sum(vectors * reference.embed(texts), axis=1)
    assert np.all(cosines > 0.9999), cosines


@pytest.fixture()
def langchain(minilm_module: Service) -> OpenAIEmbeddings:
    """LangChain as the README tells users to set it up: texts sent as texts."""
    return OpenAIEmbeddings(model=MINILM, base_url=f"{minilm_module.base_url}/v1", api_key="x",  # type: ignore[arg-type]
                            check_embedding_ctx_length=False, max_retries=0)


@pytest.fixture()
def offline_tiktoken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """tiktoken's cl100k_base without the internet (tests/offline_tiktoken.py), where LangChain's defaults load it."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(fill_cache(tmp_path / "tiktoken").parent))


def test_langchain_documents_get_the_native_vectors_in_order(langchain: OpenAIEmbeddings, minilm_module: Service,
                                                             minilm_reference: ReferenceEngine) -> None:
    texts = [f"LangChain document {i}: {text}" for i, text in enumerate(DOCUMENTS)]
    assert_same_vectors(langchain.embed_documents(texts), minilm_module, minilm_reference, texts)


def test_langchain_query_gets_the_native_vector(langchain: OpenAIEmbeddings, minilm_module: Service,
                                                minilm_reference: ReferenceEngine) -> None:
    query = "What did LangChain ask about this afternoon?"
    assert_same_vectors([langchain.embed_query(query)], minilm_module, minilm_reference, [query])


def test_langchain_query_ranks_the_matching_document_first(langchain: OpenAIEmbeddings) -> None:
    documents = np.array(langchain.embed_documents(DOCUMENTS))
    query = np.array(langchain.embed_query(QUERY))
    assert int(np.argmax(documents @ query)) == 1


def test_langchain_defaults_get_a_400_naming_the_setting_that_fixes_them(minilm_module: Service,
                                                                         offline_tiktoken: None) -> None:
    # Left at its defaults LangChain sends cl100k_base ids, which the service refuses (ACCEPT_TOKEN_IDS=false).
    defaults = OpenAIEmbeddings(model=MINILM, base_url=f"{minilm_module.base_url}/v1", api_key="x",  # type: ignore[arg-type]
                                max_retries=0)
    with pytest.raises(openai.BadRequestError) as raised:
        defaults.embed_documents(["A short sentence LangChain tokenizes with tiktoken first."])
    assert raised.value.code == "token_ids_not_accepted"
    assert "check_embedding_ctx_length=False" in raised.value.message


def test_llamaindex_texts_and_query_get_the_native_vectors(minilm_module: Service,
                                                           minilm_reference: ReferenceEngine) -> None:
    embedder = OpenAILikeEmbedding(model_name=MINILM, api_base=f"{minilm_module.base_url}/v1", api_key="x",
                                   embed_batch_size=2, max_retries=0)  # 2: three texts take two requests
    texts = [f"LlamaIndex node {i}: {text}" for i, text in enumerate(DOCUMENTS)]
    query = "Which LlamaIndex node is about baking?"
    got = [*embedder.get_text_embedding_batch(texts), embedder.get_query_embedding(query)]
    assert_same_vectors(got, minilm_module, minilm_reference, [*texts, query])
