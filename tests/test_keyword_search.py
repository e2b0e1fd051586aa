"""Keyword and hybrid search on the real system: BM25 through SQLite FTS5, PostgreSQL's full-text search."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.conftest import BOTH_DATABASES, MINILM, Store
from tests.harness import Service, running
from tests.search_cases import CASES

pytestmark = [pytest.mark.slow, BOTH_DATABASES]

SEARCH = "/get_most_similar_string_from_database/"
# An exact identifier, the case keyword search exists for: the embedding sees the near-identical codes of the
# other sentences as just as close (or closer), the keyword index only the one sentence that holds it.
RARE = "Order 5512 left the Lisbon warehouse with replacement part XK7731B on board."
NEAR = ["Part XK7731C was discontinued last year.", "Replacement part XK7713B arrived damaged.",
        "The XK7731 series needs a firmware update."]
QUERY = "XK7731B"


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, database: Store) -> Iterator[Service]:
    """The default model with the rare-word sentence stored among the labelled search cases."""
    with running(tmp_path_factory.mktemp("service"), models_dir, MODELS_TO_SERVE=MINILM, **database.env()) as service:
        texts = [RARE, *NEAR, *(text for case in CASES for text in (case.answer, *case.distractors))]
        response = httpx.post(f"{service.base_url}/get_embedding_vectors/", json={"texts": texts}, timeout=300)
        assert response.status_code == 200, response.text
        service.wait_for(lambda: search(service, QUERY, "keyword").json()["results"],
                         timeout=10, message="the rows committed (and keyword-indexed)")
        yield service


def search(service: Service, text: str, mode: str, k: int = 10, **extra: Any) -> httpx.Response:
    return httpx.post(f"{service.base_url}{SEARCH}", json={
        "text": text, "mode": mode, "number_of_most_similar_strings_to_return": k, **extra}, timeout=60)


def results(service: Service, text: str, mode: str, **extra: Any) -> list[dict[str, Any]]:
    response = search(service, text, mode, **extra)
    assert response.status_code == 200, response.text
    assert response.json()["mode"] == mode
    return response.json()["results"]


def test_keyword_search_ranks_the_sentence_with_the_rare_word_first(minilm: Service) -> None:
    found = results(minilm, QUERY, "keyword")
    assert found[0]["text"] == RARE
    assert found[0]["keyword_rank"] == 1 and found[0]["score"] > 0


def test_hybrid_search_ranks_the_sentence_with_the_rare_word_first(minilm: Service) -> None:
    found = results(minilm, QUERY, "hybrid")
    assert found[0]["text"] == RARE, found
    assert found[0]["keyword_rank"] == 1


def test_semantic_search_alone_does_not_rank_the_rare_word_first(minilm: Service) -> None:
    """What makes the two tests above able to fail: the embedding alone prefers the near-identical codes."""
    found = results(minilm, QUERY, "semantic")
    assert found[0]["text"] != RARE
    assert set(found[0]) == {"text", "similarity"}, "semantic answers keep the original two fields"


def test_hybrid_results_carry_the_fused_score_and_each_parts_rank(minilm: Service) -> None:
    found = results(minilm, QUERY, "hybrid")
    scores = [hit["score"] for hit in found]
    assert scores == sorted(scores, reverse=True)
    assert any(hit["semantic_rank"] is not None for hit in found)
    both = [hit for hit in found if hit["semantic_rank"] is not None and hit["keyword_rank"] is not None]
    for hit in both:
        assert hit["score"] == pytest.approx(1 / (60 + hit["semantic_rank"]) + 1 / (60 + hit["keyword_rank"]))
        assert -1 <= hit["similarity"] <= 1


def test_keyword_search_does_not_embed_the_query(minilm: Service) -> None:
    query = "XK7731B keyword-only query that nobody embedded"
    results(minilm, query, "keyword")
    strings = httpx.get(f"{minilm.base_url}/get_all_stored_strings/", timeout=30).json()["strings"]
    assert query not in strings


def test_keyword_search_reads_punctuation_as_text_not_query_syntax(minilm: Service) -> None:
    for query in ['"unbalanced', "NEAR(a b)", "a* OR -b", "'; DROP TABLE embeddings; --", "***"]:
        response = search(minilm, query, "keyword")
        assert response.status_code == 200, (query, response.text)


def test_an_unknown_search_mode_is_a_422_naming_the_field(minilm: Service) -> None:
    response = search(minilm, "anything", "fuzzy")
    assert response.status_code == 422
    assert "mode" in response.json()["detail"]
