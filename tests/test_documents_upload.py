"""Reading a multipart upload with its size limit (gateway/documents/upload.py), on a bare Starlette app."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from gateway.documents.upload import read_upload
from gateway.errors import EXCEPTION_HANDLERS

LIMIT = 1000


async def echo(request: Request) -> Response:
    upload = await read_upload(request, LIMIT, "MAX_UPLOAD_SIZE_MB=0.001")
    return JSONResponse({"filename": upload.filename, "size": len(upload.content), "fields": upload.fields})


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = Starlette(routes=[Route("/", echo, methods=["POST"])], exception_handlers=EXCEPTION_HANDLERS)
    return TestClient(app)


def test_the_file_and_the_form_fields_are_read(client: TestClient) -> None:
    response = client.post("/", files={"file": ("notes.txt", b"x" * LIMIT)}, data={"json_format": "split"})
    assert response.json() == {"filename": "notes.txt", "size": LIMIT, "fields": {"json_format": "split"}}


def test_a_file_over_the_limit_gets_413_naming_the_setting(client: TestClient) -> None:
    response = client.post("/", files={"file": ("big.txt", b"x" * (LIMIT + 1))})
    assert response.status_code == 413
    assert "MAX_UPLOAD_SIZE_MB" in response.json()["detail"]


def test_a_declared_length_over_the_limit_gets_413_before_the_body_is_read(client: TestClient) -> None:
    def body() -> Iterator[bytes]:
        yield b"--b\r\n"  # what follows is never sent: the declared length is enough to refuse

    response = client.post("/", content=body(), headers={
        "content-type": "multipart/form-data; boundary=b", "content-length": str(10 * 1024 * 1024)})
    assert response.status_code == 413


def test_a_form_without_a_file_gets_422(client: TestClient) -> None:
    response = client.post("/", data={"model_name": "x"}, files={"other": (None, b"y")})
    assert response.status_code == 422
    assert "file" in response.json()["detail"]


def test_a_body_that_is_not_multipart_gets_422(client: TestClient) -> None:
    response = client.post("/", json={"file": "text"})
    assert response.status_code == 422
    assert "multipart/form-data" in response.json()["detail"]
