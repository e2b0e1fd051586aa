"""Collections and documents scope search; deleting a string, a document or a collection removes it everywhere.

The real system with the real default model, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from shared.index_manifest import model_index_dir, read_manifest
from tests.conftest import BOTH_DATABASES, MINILM, Store
from tests.harness import Service, running

pytestmark = [pytest.mark.slow, BOTH_DATABASES]

SEARCH = "/get_most_similar_string_from_database/"
PETS = ["My cat sleeps on the warm windowsill all afternoon.", "The puppy chewed through its new leash.",
        "Our parrot learned to whistle the national anthem."]
MONEY = ["The central bank raised interest rates again.", "She moved her savings into an index fund.",
         "Quarterly earnings beat the analysts' forecasts."]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, database: Store) -> Iterator[Service]:
    """The default model alone, its index saved often so that deletes reach it quickly."""
    with running(tmp_path_factory.mktemp("service"), models_dir, MODELS_TO_SERVE=MINILM,
                 SEARCH_INDEX_SAVE_INTERVAL_MS="200", **database.env()) as service:
        yield service


def embed(service: Service, texts: list[str], collection: str | None = None) -> list[bool]:
    body: dict[str, Any] = {"texts": texts}
    if collection is not None:
        body["collection"] = collection
    response = httpx.post(f"{service.base_url}/get_embedding_vectors/", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()["cached"]


def found(service: Service, query: str, k: int = 10, **scope: str) -> list[str]:
    response = httpx.post(f"{service.base_url}{SEARCH}", json={
        "text": query, "number_of_most_similar_strings_to_return": k, **scope}, timeout=60)
    assert response.status_code == 200, response.text
    return [hit["text"] for hit in response.json()["results"]]


def delete(service: Service, path: str, **body: Any) -> httpx.Response:
    return httpx.request("DELETE", f"{service.base_url}{path}", json=body or None, timeout=60)


def stored_strings(service: Service) -> set[str]:
    return set(httpx.get(f"{service.base_url}/get_all_stored_strings/", timeout=30).json()["strings"])


def wait_until_indexed(service: Service, count_at_least: int) -> None:
    """Return once the saved index holds at least `count_at_least` vectors."""
    directory = model_index_dir(service.data_dir / "indexes", MINILM)
    service.wait_for(lambda: (m := read_manifest(directory)) is not None and m.count >= count_at_least,
                     message=f"an index of {count_at_least} vectors")


def test_search_scoped_to_a_collection_returns_only_its_strings(minilm: Service) -> None:
    embed(minilm, PETS, collection="pets")
    embed(minilm, MONEY, collection="money")
    for collection, texts in (("pets", PETS), ("money", MONEY)):
        minilm.wait_for(lambda c=collection, t=texts: set(found(minilm, "animals at home", collection=c)) == set(t),
                        timeout=10, message=f"the strings of {collection}, and only them")


def test_a_text_in_two_collections_is_computed_once_and_found_in_both(minilm: Service) -> None:
    text = "The lighthouse keeper painted the stairs bright red."
    assert embed(minilm, [text], collection="coast") == [False]
    assert embed(minilm, [text], collection="paint") == [True]
    for collection in ("coast", "paint"):
        minilm.wait_for(lambda c=collection: found(minilm, "a red staircase", collection=c) == [text],
                        timeout=10, message=f"the text in {collection}")


def test_search_scoped_to_an_unknown_collection_finds_nothing(minilm: Service) -> None:
    embed(minilm, PETS)
    assert found(minilm, "animals at home", collection="no-such-collection") == []


def test_search_scoped_to_a_document_returns_only_its_sentences(minilm: Service) -> None:
    content = (b"The glacier retreated two kilometres in a decade. Meltwater lakes formed at its edge. "
               b"Scientists measured the ice thickness with radar.")
    response = httpx.post(f"{minilm.base_url}/get_all_embeddings_for_document/",
                          files={"file": ("glacier.txt", content, "text/plain")}, timeout=120)
    assert response.status_code == 200, response.text
    embed(minilm, ["Ice cream melts quickly in the summer sun."])
    file_hash = hashlib.sha3_256(content).hexdigest()
    minilm.wait_for(lambda: found(minilm, "melting ice", document=file_hash), timeout=10,
                    message="the document committed")
    results = found(minilm, "melting ice", document=file_hash)
    assert len(results) == 3 and all(text in content.decode() for text in results)
    assert "Ice cream melts quickly in the summer sun." in found(minilm, "melting ice")


def test_deleting_a_string_removes_it_from_search_stored_strings_the_index_and_the_cache(minilm: Service) -> None:
    doomed = "The submarine surfaced beside the frozen harbour at dawn."
    embed(minilm, [doomed, "A ship sailed into the icy port early in the morning."])
    wait_until_indexed(minilm, 2)
    assert doomed in found(minilm, "a vessel arriving at a cold port")

    response = delete(minilm, "/stored_strings/", text=doomed)
    assert response.status_code == 200, response.text
    assert response.json() == {"deleted_rows": 1, "models": [MINILM]}
    assert doomed not in found(minilm, "a vessel arriving at a cold port", k=50)
    assert doomed not in stored_strings(minilm)
    # The saved index drops it within a poll and a save.
    directory = model_index_dir(minilm.data_dir / "indexes", MINILM)
    minilm.wait_for(lambda: (m := read_manifest(directory)) is not None and m.deletions_covered > 0,
                    timeout=10, message="an index saved without the deleted row")

    minilm.stop()  # a real restart: nothing of it may come back from the store or a saved index
    minilm.start()
    assert doomed not in found(minilm, "a vessel arriving at a cold port", k=50)
    assert embed(minilm, [doomed]) == [False], "a deleted string must be computed again"
    minilm.wait_for(lambda: doomed in stored_strings(minilm), timeout=10, message="the string stored again")


def test_a_deleted_string_is_not_answered_from_the_gateways_memory(minilm: Service) -> None:
    text = "The violinist tuned her instrument backstage."
    assert embed(minilm, [text]) == [False]
    assert embed(minilm, [text]) == [True]
    assert delete(minilm, "/stored_strings/", text=text, model_name=MINILM).status_code == 200
    assert embed(minilm, [text]) == [False]


def test_deleting_a_collection_keeps_the_texts_another_collection_holds(minilm: Service) -> None:
    shared_text, only_here = "Bees carry pollen between the flowers.", "Wasps build nests of chewed paper."
    embed(minilm, [shared_text, only_here], collection="insects")
    embed(minilm, [shared_text], collection="garden")
    time.sleep(0.5)  # the memberships are committed with the next flush
    response = delete(minilm, "/collections/insects")
    assert response.status_code == 200, response.text
    assert response.json()["deleted_rows"] == 1
    stored = stored_strings(minilm)
    assert only_here not in stored and shared_text in stored
    assert found(minilm, "insects", collection="insects") == []
    assert found(minilm, "insects", collection="garden") == [shared_text]
    assert delete(minilm, "/collections/insects").status_code == 404


def test_deleting_a_document_removes_it_and_the_sentences_only_it_holds(minilm: Service) -> None:
    content = b"Volcanic ash grounded every flight for a week. The airline refunded all the tickets."
    response = httpx.post(f"{minilm.base_url}/get_all_embeddings_for_document/",
                          files={"file": ("ash.txt", content, "text/plain")}, timeout=120)
    assert response.status_code == 200, response.text
    file_hash = hashlib.sha3_256(content).hexdigest()
    response = delete(minilm, f"/stored_documents/{file_hash}")
    assert response.status_code == 200, response.text
    assert response.json()["deleted_rows"] == 2
    assert not {"Volcanic ash grounded every flight for a week.",
                "The airline refunded all the tickets."} & stored_strings(minilm)
    documents = httpx.get(f"{minilm.base_url}/get_all_stored_documents_with_embeddings/", timeout=30).json()
    assert "ash.txt" not in documents["documents"]
    assert delete(minilm, f"/stored_documents/{file_hash}").status_code == 404


@pytest.mark.parametrize(("path", "body", "status"), [
    ("/stored_strings/", {"text": "never stored anywhere at all"}, 404),
    ("/stored_strings/", {"txt": "misspelt"}, 422),
    ("/stored_strings/", {"text": "x", "model": "a misspelt model_name must not widen the delete"}, 422),
    ("/stored_documents/" + "0" * 64, None, 404),
    ("/stored_documents/not-a-hash", None, 422),
    ("/collections/never-made", None, 404),
])
def test_deleting_what_does_not_exist_or_is_malformed_is_a_clear_4xx(minilm: Service, path: str,
                                                                     body: dict[str, str] | None, status: int) -> None:
    response = httpx.request("DELETE", f"{minilm.base_url}{path}", json=body, timeout=30)
    assert response.status_code == status, response.text
    assert response.json()["detail"]


def test_a_documents_sentences_join_the_collection_its_upload_names(minilm: Service) -> None:
    content = b"Tulips bloom in early spring. Roses need full sun to flower well."
    response = httpx.post(f"{minilm.base_url}/get_all_embeddings_for_document/", data={"collection": "flowers"},
                          files={"file": ("flowers.txt", content, "text/plain")}, timeout=120)
    assert response.status_code == 200, response.text
    minilm.wait_for(lambda: set(found(minilm, "gardening", collection="flowers")) == {
        "Tulips bloom in early spring.", "Roses need full sun to flower well."}, timeout=10,
        message="the document's sentences in the collection")


def test_openai_embeddings_take_the_collection_as_an_extra_field(minilm: Service) -> None:
    response = httpx.post(f"{minilm.base_url}/v1/embeddings", json={
        "model": MINILM, "input": ["Comets have tails of dust and gas."], "collection": "space"}, timeout=60)
    assert response.status_code == 200, response.text
    minilm.wait_for(lambda: found(minilm, "astronomy", collection="space") == ["Comets have tails of dust and gas."],
                    timeout=10, message="the input in the collection")


def test_the_cli_deletes_a_collection(minilm: Service) -> None:
    embed(minilm, ["Glaciers carve deep valleys over millennia."], collection="geology")
    minilm.wait_for(lambda: found(minilm, "ice", collection="geology") != [], timeout=10, message="the membership")
    result = minilm.cli("delete", "collection", "geology")
    assert json.loads(result.stdout) == {"deleted_rows": 1, "models": [MINILM]}
    assert minilm.cli("delete", "collection", "geology", check=False).returncode == 1
