"""The original service's embedding endpoints, on the real system with the real default models."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import BOTH_DATABASES, MINILM, SMOLLM, Store
from tests.harness import Service, running
from tests.reference_bert import reference_embeddings

pytestmark = [pytest.mark.slow, BOTH_DATABASES]

HELLO_WORLD_PREFIX = [-0.0345, 0.0309, 0.0067, 0.0261, -0.0394]
VARIED_SENTENCES = [
    "Hello world",
    "The café on the corner serves a naïve crème brûlée.",
    "Zürich, Genève and Bern are Swiss cities.",
    "In 2024, 3.5 million people visited; 42% came back.",
    "What?! No way... really?",
    "ALL CAPS SENTENCE WITH SHOUTING",
    "mixed CaSe TeXt",
    "embeddings",
    "",
    "Tabs\tand\nnewlines\tin text.",
    "Email me at someone@example.com or visit https://example.org/path?q=1.",
    "東京は日本の首都です。",
    "Москва — столица России.",
    "Emoji are fun 🎉🚀",
    "The quick brown fox jumps over the lazy dog.",
    "A stitch in time saves nine.",
    "def add(a, b): return a + b",
    "Dr. Smith earned $1,250.75 on Jan. 3rd.",
    "Semantic search finds documents by meaning, not by keywords.",
    "Cats and dogs are common household pets.",
    " ".join(["A long text that goes past the model's context window."] * 80),
]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_hello_world_matches_sentence_transformers(service: Service) -> None:
    body = service.embed("Hello world", MINILM)
    vector = np.array(body["embedding"])
    assert body["dimensions"] == 384 and vector.shape == (384,)
    assert abs(np.linalg.norm(vector) - 1.0) < 1e-5
    assert np.allclose(vector[:5], HELLO_WORLD_PREFIX, atol=1e-3)


def test_minilm_matches_float64_reference_forward_pass(service: Service, minilm_source_dir: Path) -> None:
    with service.client() as client:
        response = client.post("/get_embedding_vectors/", json={"texts": VARIED_SENTENCES, "model_name": MINILM})
    assert response.status_code == 200, response.text
    ours = np.array(response.json()["embeddings"])
    reference = reference_embeddings(minilm_source_dir, VARIED_SENTENCES)
    similarities = [cosine(a, b) for a, b in zip(ours, reference)]
    assert min(similarities) >= 0.999, list(zip(VARIED_SENTENCES, similarities))


def test_smollm2_returns_576_dimensional_normalised_vectors(service: Service) -> None:
    body = service.embed("Hello world", SMOLLM)
    assert body["dimensions"] == 576 and len(body["embedding"]) == 576
    assert abs(np.linalg.norm(body["embedding"]) - 1.0) < 1e-5


def test_a_repeated_request_is_answered_from_the_cache_without_reaching_a_worker(service: Service) -> None:
    def served() -> int:
        return sum(w["texts"] for w in service.workers(MINILM))

    def settled() -> int:  # earlier tests' texts may still be on their way into the counters
        readings = [served()]
        for _ in range(10):  # at most 15 s: the counters stop moving once nothing is being embedded
            time.sleep(1.5)
            readings.append(served())
            if readings[-1] == readings[-2]:
                break
        return readings[-1]

    text = "This sentence is embedded once and then served from the cache."
    served_earlier = settled()
    first = service.embed(text, MINILM)
    # Workers report their counters about every second; on a busy machine a report can come late, so wait for
    # the one that counts the first request instead of sleeping a fixed time.
    service.wait_for(lambda: served() > served_earlier, timeout=15, message="the worker's report of the first text")
    served_before = served()
    second = service.embed(text, MINILM)
    time.sleep(2.5)  # two report periods and more: a text the worker embedded would be counted by now
    served_after = served()
    assert first["cached"] is False and second["cached"] is True
    assert second["embedding"] == first["embedding"]
    assert served_after == served_before


def test_llm_model_name_is_accepted_as_the_model_field(service: Service) -> None:
    response = httpx.post(f"{service.base_url}/get_embedding_vector/",
                          json={"text": "spelling", "llm_model_name": SMOLLM}, timeout=60)
    assert response.status_code == 200
    assert response.json()["model"] == SMOLLM


def test_model_name_defaults_to_the_default_model(service: Service) -> None:
    response = httpx.post(f"{service.base_url}/get_embedding_vector/", json={"text": "default"}, timeout=60)
    assert response.json()["model"] == MINILM


def test_model_list_names_exactly_the_served_models(service: Service) -> None:
    response = httpx.get(f"{service.base_url}/get_list_of_available_model_names/")
    assert response.json() == {"model_names": [MINILM, SMOLLM]}


def test_an_unknown_model_gets_422_naming_it(service: Service) -> None:
    response = httpx.post(f"{service.base_url}/get_embedding_vector/", json={"text": "x", "model_name": "nope"})
    assert response.status_code == 422
    assert "nope" in response.json()["detail"]


def test_malformed_json_gets_422_saying_so(service: Service) -> None:
    response = httpx.post(f"{service.base_url}/get_embedding_vector/", content=b"{not json")
    assert response.status_code == 422
    assert "JSON" in response.json()["detail"]


def test_a_missing_text_field_gets_422_naming_the_field(service: Service) -> None:
    response = httpx.post(f"{service.base_url}/get_embedding_vector/", json={"model_name": MINILM})
    assert response.status_code == 422
    assert "text" in response.json()["detail"]


def test_stored_strings_lists_each_embedded_text_once_and_paginates(service: Service) -> None:
    texts = ["stored alpha", "stored beta", "stored gamma"]
    for text in texts:
        service.embed(text, MINILM)
        service.embed(text, SMOLLM)

    def stored() -> list[str]:
        return httpx.get(f"{service.base_url}/get_all_stored_strings/").json()["strings"]

    service.wait_for(lambda: set(texts) <= set(stored()), timeout=5, message="rows committed")
    strings = stored()
    assert len(strings) == len(set(strings))
    page = httpx.get(f"{service.base_url}/get_all_stored_strings/", params={"offset": 1, "limit": 2}).json()
    assert page["strings"] == strings[1:3]


def test_openapi_document_describes_every_endpoint_with_schemas(service: Service) -> None:
    document = httpx.get(f"{service.base_url}/openapi.json").json()
    for path in ("/get_embedding_vector/", "/get_embedding_vectors/", "/get_list_of_available_model_names/",
                 "/get_all_stored_strings/"):
        assert path in document["paths"]
    for name in ("EmbeddingRequest", "EmbeddingResponse", "ModelNamesResponse", "ErrorResponse"):
        assert name in document["components"]["schemas"]


def test_the_embedding_endpoints_declare_every_error_they_can_answer(service: Service) -> None:
    paths = httpx.get(f"{service.base_url}/openapi.json").json()["paths"]
    for path in ("/get_embedding_vector/", "/get_embedding_vectors/"):
        assert {"413", "422", "429", "502", "503", "504"} <= set(paths[path]["post"]["responses"])


def test_swagger_ui_is_served_at_the_root_without_internet(service: Service) -> None:
    page = httpx.get(f"{service.base_url}/")
    assert page.status_code == 200 and "swagger-ui" in page.text
    assert "//" not in page.text.replace("http://", "").split("<script>")[0].split("href=")[1][:3]
    script = httpx.get(f"{service.base_url}/swagger-assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.content) > 100_000


def test_a_large_batch_is_shared_by_the_models_workers_in_input_order(tmp_path: Path, models_dir: Path,
                                                                      database: Store) -> None:
    texts = [f"batch sentence number {i} for two workers" for i in range(64)]
    with running(tmp_path, models_dir, MODELS_TO_SERVE=MINILM, WORKERS_PER_MODEL="2", **database.env()) as service:
        service.wait_for(lambda: sum(w["state"] == "ready" for w in service.workers()) == 2, timeout=60,
                         message="two workers")
        with service.client() as client:
            response = client.post("/get_embedding_vectors/", json={"texts": texts, "model_name": MINILM})
            single = client.post("/get_embedding_vector/", json={"text": texts[40], "model_name": MINILM})
        assert response.status_code == 200
        vectors = np.array(response.json()["embeddings"])
        assert vectors.shape == (64, 384)
        assert cosine(vectors[40], np.array(single.json()["embedding"])) > 0.99999
        service.wait_for(lambda: all(w["texts"] > 0 for w in service.workers()), timeout=5,
                         message="texts computed by both workers")
