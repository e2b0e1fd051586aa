"""The optional security token, on the real service: who gets in, with what, and what stays open."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import httpx
import pytest

from tests.conftest import MINILM
from tests.harness import Service, running

pytestmark = pytest.mark.slow
TOKEN = "correct horse battery staple"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Service]:
    with running(tmp_path_factory.mktemp("secured"), models_dir, MODELS_TO_SERVE=MINILM, USE_SECURITY_TOKEN="true",
                 SECURITY_TOKEN=TOKEN) as service:
        yield service


def _embed(service: Service, *, headers: dict[str, str] | None = None, params: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{service.base_url}/get_embedding_vector/", json={"text": "secret"}, timeout=60, headers=headers,
                      params=params)


def test_a_request_without_a_token_gets_401(secured: Service) -> None:
    response = _embed(secured)
    assert response.status_code == 401
    assert "token" in response.json()["detail"]
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_request_with_a_wrong_token_gets_403(secured: Service) -> None:
    assert _embed(secured, headers={"Authorization": "Bearer wrong"}).status_code == 403


def test_the_token_is_accepted_as_a_bearer_header(secured: Service) -> None:
    assert _embed(secured, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_the_token_is_accepted_as_the_original_token_parameter(secured: Service) -> None:
    assert _embed(secured, params={"token": TOKEN}).status_code == 200


def test_every_data_endpoint_is_protected(secured: Service) -> None:
    for path in ("/get_list_of_available_model_names/", "/get_all_stored_strings/", "/v1/models", "/metrics"):
        assert httpx.get(f"{secured.base_url}{path}").status_code == 401, path


def test_the_admin_api_needs_the_token(secured: Service) -> None:
    url = f"{secured.base_url}/admin/models"
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 403
    scale = f"{secured.base_url}/admin/models/{MINILM}/scale"
    assert httpx.post(scale, json={"workers": 0}, timeout=10).status_code == 401
    assert httpx.post(scale, json={"workers": 0}, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 403
    assert secured.workers(MINILM), "a refused scale changed nothing"
    answer = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert answer.status_code == 200 and MINILM in {model["name"] for model in answer.json()["models"]}


def test_health_the_docs_and_the_console_page_stay_open(secured: Service) -> None:
    for path in ("/health", "/", "/openapi.json", "/console"):
        assert httpx.get(f"{secured.base_url}{path}").status_code == 200, path


def test_start_refuses_when_the_token_is_on_but_not_set(tmp_path: Path, models_dir: Path) -> None:
    service = Service(tmp_path, models_dir, {"MODELS_TO_SERVE": MINILM, "USE_SECURITY_TOKEN": "true"})
    result = service.cli("start", check=False)
    assert result.returncode != 0
    assert "SECURITY_TOKEN" in result.stderr
