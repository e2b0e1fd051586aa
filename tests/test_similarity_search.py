"""Similarity and semantic search on the real system with the real default model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import pytest

from shared.index_manifest import IndexManifest, model_index_dir, read_manifest
from tests.conftest import BOTH_DATABASES, MINILM, Store
from tests.harness import Service, running
from tests.search_cases import CASES

pytestmark = [pytest.mark.slow, BOTH_DATABASES]

SIMILARITY = "/compute_similarity_between_strings/"
SEARCH = "/get_most_similar_string_from_database/"


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, database: Store) -> Iterator[Service]:
    """The default model alone, shared by the tests of this module that only add strings."""
    with running(tmp_path_factory.mktemp("service"), models_dir, MODELS_TO_SERVE=MINILM, **database.env()) as service:
        yield service


def search(service: Service, text: str, k: int | None = None, **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {"text": text, **extra}
    if k is not None:
        body["number_of_most_similar_strings_to_return"] = k
    return httpx.post(f"{service.base_url}{SEARCH}", json=body, timeout=60)


def found_texts(service: Service, text: str, k: int | None = None) -> list[str]:
    response = search(service, text, k)
    assert response.status_code == 200, response.text
    return [hit["text"] for hit in response.json()["results"]]


def embed_all(service: Service, texts: list[str]) -> list[np.ndarray]:
    response = httpx.post(f"{service.base_url}/get_embedding_vectors/", json={"texts": texts}, timeout=120)
    assert response.status_code == 200, response.text
    return [np.array(vector) for vector in response.json()["embeddings"]]


def stored_strings(service: Service) -> set[str]:
    return set(httpx.get(f"{service.base_url}/get_all_stored_strings/", timeout=30).json()["strings"])


def manifest(service: Service) -> IndexManifest | None:
    return read_manifest(model_index_dir(service.data_dir / "indexes", MINILM))


def test_the_right_answer_ranks_first_in_at_least_90_percent_of_the_labelled_cases(minilm: Service) -> None:
    """Every answer and distractor of every case is stored; the queries are stored too as they are searched,
    so the rank is taken among the labelled strings."""
    labelled = [text for case in CASES for text in (case.answer, *case.distractors)]
    assert len(CASES) >= 30 and len(set(labelled)) == len(labelled)
    embed_all(minilm, labelled)
    misses = []
    for case in CASES:
        ranked = [text for text in found_texts(minilm, case.query, k=25) if text in set(labelled)]
        if ranked[0] != case.answer:
            misses.append((case.query, ranked[0]))
    assert len(misses) <= 0.1 * len(CASES), misses


def test_similarity_is_the_dot_product_of_the_two_normalised_embeddings(minilm: Service) -> None:
    response = httpx.post(f"{minilm.base_url}{SIMILARITY}",
                          json={"text1": "A cat sits on the mat.", "text2": "A kitten rests on a rug."}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    first, second = np.array(body["embedding1"]), np.array(body["embedding2"])
    assert abs(np.linalg.norm(first) - 1) < 1e-5 and abs(np.linalg.norm(second) - 1) < 1e-5
    assert abs(body["similarity"] - float(first @ second)) < 1e-5
    assert body["similarity_measure"] == "cosine_similarity"
    stored = np.array(minilm.embed("A cat sits on the mat.")["embedding"], dtype=np.float32)
    assert np.array_equal(np.array(body["embedding1"], dtype=np.float32), stored)


def test_similarity_accepts_llm_model_name(minilm: Service) -> None:
    response = httpx.post(f"{minilm.base_url}{SIMILARITY}",
                          json={"text1": "one", "text2": "two", "llm_model_name": MINILM}, timeout=60)
    assert response.status_code == 200 and response.json()["model"] == MINILM


def test_search_similarities_are_the_cosines_of_the_embeddings_best_first(minilm: Service) -> None:
    texts = ["Glaciers are retreating in the Alps.", "Mountain ice is melting fast.", "A recipe for lemon tart."]
    vectors = dict(zip(texts, embed_all(minilm, texts)))
    query = "Alpine glaciers are shrinking."
    response = search(minilm, query, k=50)
    hits = response.json()["results"]
    [query_vector] = embed_all(minilm, [query])
    for hit in hits:
        if hit["text"] in vectors:
            assert abs(hit["similarity"] - float(query_vector @ vectors[hit["text"]])) < 1e-5
    similarities = [hit["similarity"] for hit in hits]
    assert similarities == sorted(similarities, reverse=True)


def test_a_newly_embedded_string_is_found_by_the_very_next_search(minilm: Service) -> None:
    new = "The octopus has three hearts and blue blood."
    minilm.embed(new)
    # No wait between the two: the gateway searches the rows it computed itself beside the saved index.
    assert new in found_texts(minilm, "How many hearts does an octopus have?", k=3)


def test_the_query_text_is_left_out_of_its_own_results(minilm: Service) -> None:
    query = "Saturn's rings are made of ice and rock."
    minilm.embed(query)
    minilm.embed("Saturn has beautiful rings of ice.")
    results = found_texts(minilm, query, k=5)
    assert query not in results and "Saturn has beautiful rings of ice." in results


def test_k_larger_than_the_corpus_returns_the_whole_corpus(minilm: Service) -> None:
    query = "Everything stored, please."
    minilm.embed(query)
    minilm.wait_for(lambda: query in stored_strings(minilm), timeout=5, message="the query committed")
    corpus = stored_strings(minilm) - {query}
    assert set(found_texts(minilm, query, k=100_000)) == corpus


def test_the_number_of_results_defaults_to_ten(minilm: Service) -> None:
    embed_all(minilm, [f"default count filler {number}" for number in range(12)])
    assert len(found_texts(minilm, "default count filler")) == 10


@pytest.mark.parametrize("k", [0, -3])
def test_k_of_zero_or_less_gets_422_naming_the_field(minilm: Service, k: int) -> None:
    response = search(minilm, "anything", k=k)
    assert response.status_code == 422
    assert "number_of_most_similar_strings_to_return" in response.json()["detail"]


def test_an_unknown_model_gets_422_naming_it(minilm: Service) -> None:
    response = search(minilm, "anything", model_name="no-such-model")
    assert response.status_code == 422 and "no-such-model" in response.json()["detail"]


def test_an_empty_query_gets_422_naming_the_field(minilm: Service) -> None:
    response = search(minilm, "")
    assert response.status_code == 422 and "text" in response.json()["detail"]


def test_both_endpoints_are_described_in_the_openapi_document(minilm: Service) -> None:
    document = httpx.get(f"{minilm.base_url}/openapi.json").json()
    assert SIMILARITY in document["paths"] and SEARCH in document["paths"]
    for name in ("SimilarityRequest", "SimilarityResponse", "SemanticSearchRequest", "SemanticSearchResponse"):
        assert name in document["components"]["schemas"]


def test_a_model_with_nothing_cached_returns_an_empty_result_list(minilm_service: Service) -> None:
    response = search(minilm_service, "The very first string of this service.")
    assert response.status_code == 200
    assert response.json()["results"] == []


def test_a_restarted_service_loads_the_saved_index_instead_of_rebuilding_it(minilm_service: Service) -> None:
    texts = [f"Restart survivor number {number}" for number in range(5)]
    embed_all(minilm_service, texts)
    minilm_service.wait_for(lambda: (m := manifest(minilm_service)) is not None and m.count >= len(texts),
                            timeout=10, message="an index holding the rows")
    minilm_service.stop()
    saved = manifest(minilm_service)
    assert saved is not None
    writer_log = minilm_service.data_dir / "logs" / "writer.log"
    before = writer_log.read_text()
    minilm_service.start()
    assert "Restart survivor number 3" in found_texts(minilm_service, "survivor of a restart", k=10)
    after_restart = writer_log.read_text()[len(before):]
    assert f"loaded generation {saved.generation} ({saved.count} vectors" in after_restart
    assert "built" not in after_restart
