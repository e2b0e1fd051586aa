"""Bad input across every endpoint: a clear 4xx JSON error naming the problem, and no row written."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.conftest import MINILM
from tests.harness import Service, running

pytestmark = pytest.mark.slow
TOKEN = "table-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    status: int
    says: str  # a piece of the error message that names the problem
    request: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=lambda: dict(AUTH))


CASES = [
    Case("malformed JSON", "POST", "/get_embedding_vector/", 422, "JSON", {"content": b"{not json"}),
    Case("invalid UTF-8", "POST", "/get_embedding_vector/", 422, "UTF-8", {"content": b'{"text": "\xff\xfe"}'}),
    Case("text of the wrong type", "POST", "/get_embedding_vector/", 422, "text", {"json": {"text": 42}}),
    Case("text missing", "POST", "/get_embedding_vector/", 422, "text", {"json": {"model_name": MINILM}}),
    Case("text null", "POST", "/get_embedding_vector/", 422, "text", {"json": {"text": None}}),
    Case("body not an object", "POST", "/get_embedding_vector/", 422, "body", {"json": ["a", "b"]}),
    Case("unknown model", "POST", "/get_embedding_vector/", 422, "unknown model", {"json": {"text": "x", "model_name": "gpt-9"}}),
    Case("text over MAX_TEXT_CHARS", "POST", "/get_embedding_vector/", 422, "MAX_TEXT_CHARS", {"json": {"text": "a" * 1001}}),
    Case("body over MAX_REQUEST_BODY_MB", "POST", "/get_embedding_vector/", 413, "MAX_REQUEST_BODY_MB",
         {"json": {"text": "a" * 30_000}}),
    Case("texts not a list", "POST", "/get_embedding_vectors/", 422, "texts", {"json": {"texts": "one"}}),
    Case("too many texts", "POST", "/get_embedding_vectors/", 422, "MAX_BATCH_TEXTS", {"json": {"texts": ["t"] * 11}}),
    Case("similarity without text2", "POST", "/compute_similarity_between_strings/", 422, "text2", {"json": {"text1": "a"}}),
    Case("negative k", "POST", "/get_most_similar_string_from_database/", 422, "number_of_most_similar_strings_to_return",
         {"json": {"text": "query", "number_of_most_similar_strings_to_return": -1}}),
    Case("zero k", "POST", "/get_most_similar_string_from_database/", 422, "number_of_most_similar_strings_to_return",
         {"json": {"text": "query", "number_of_most_similar_strings_to_return": 0}}),
    Case("empty search query", "POST", "/get_most_similar_string_from_database/", 422, "text", {"json": {"text": ""}}),
    Case("search of an unknown model", "POST", "/get_most_similar_string_from_database/", 422, "unknown model",
         {"json": {"text": "query", "model_name": "nope"}}),
    Case("unknown orient", "POST", "/get_all_embeddings_for_document/?json_format=diagonal", 422, "diagonal",
         {"files": {"file": ("a.txt", b"A perfectly fine sentence for the test.", "text/plain")}}),
    Case("a binary upload", "POST", "/get_all_embeddings_for_document/", 415, "unsupported file type",
         {"files": {"file": ("photo.txt", PNG, "text/plain")}}),
    Case("an empty upload", "POST", "/get_all_embeddings_for_document/", 422, "empty",
         {"files": {"file": ("empty.txt", b"", "text/plain")}}),
    Case("an upload without a file", "POST", "/get_all_embeddings_for_document/", 422, "file",
         {"data": {"json_format": "records"}}),
    Case("negative offset", "GET", "/get_all_stored_strings/?offset=-1", 422, "offset"),
    Case("non-numeric limit", "GET", "/get_all_stored_strings/?limit=abc", 422, "limit"),
    Case("OpenAI request without input", "POST", "/v1/embeddings", 400, "input", {"json": {"model": MINILM}}),
    Case("OpenAI unknown model", "POST", "/v1/embeddings", 404, "gpt-9", {"json": {"model": "gpt-9", "input": "x"}}),
    Case("no token", "POST", "/get_embedding_vector/", 401, "token", {"json": {"text": "x"}}, headers={}),
    Case("wrong token", "POST", "/get_embedding_vector/", 403, "token", {"json": {"text": "x"}},
         headers={"Authorization": "Bearer not-it"}),
]


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Service]:
    with running(tmp_path_factory.mktemp("strict"), models_dir, MODELS_TO_SERVE=MINILM, USE_SECURITY_TOKEN="true",
                 SECURITY_TOKEN=TOKEN, MAX_TEXT_CHARS="1000", MAX_BATCH_TEXTS="10", MAX_REQUEST_BODY_MB="0.02") as service:
        yield service


def _row_counts(service: Service) -> dict[str, int]:
    with sqlite3.connect(service.data_dir / "llama_embeddings.sqlite") as connection:
        return {table: connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("embeddings", "documents", "document_embeddings")}


def _message(body: dict[str, Any]) -> str:
    """The original endpoints answer {"detail": ...}; the OpenAI ones {"error": {"message": ...}}."""
    return str(body["error"]["message"]) if "error" in body else str(body["detail"])


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_bad_input_gets_a_clear_4xx_and_writes_nothing(strict: Service, case: Case) -> None:
    before = _row_counts(strict)
    response = httpx.request(case.method, f"{strict.base_url}{case.path}", headers=case.headers, timeout=60,
                             **case.request)
    assert response.status_code == case.status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert case.says.lower() in _message(response.json()).lower(), response.text
    assert _row_counts(strict) == before
