"""The document endpoints on the real system: upload over HTTP, unzip the answer, look into the database."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import httpx
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select

from gateway.documents.packaging import ORIENTS
from shared.schema import database_engine, document_embeddings, documents, embeddings, text_hash
from tests.conftest import BOTH_DATABASES, MINILM, ReferenceEngine, Store
from tests.document_files import aes_encrypted_pdf, fpdf_pdf, ghostscript_pdf, image_only_pdf, png_image, prose
from tests.harness import Service, running

pytestmark = [pytest.mark.slow, BOTH_DATABASES]

UPLOAD_LIMIT_MB = 1
ACCENTED_TEXT = (
    "Dr. Müller measured 3.5 litres of water in the café.\n"
    "The experiment was repeated\n"
    "on three consecutive days. Ok.\n"
    "Señor García wrote the report for the U.S. office in Zürich!\n"
)
ACCENTED_SENTENCES = [
    "Dr. Müller measured 3.5 litres of water in the café.",
    "The experiment was repeated on three consecutive days.",
    "Señor García wrote the report for the U.S. office in Zürich!",
]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, models_dir: Any, database: Store) -> Iterator[Service]:
    with running(tmp_path_factory.mktemp("service"), models_dir, MODELS_TO_SERVE=MINILM,
                 MAX_UPLOAD_SIZE_MB=str(UPLOAD_LIMIT_MB), **database.env()) as service:
        yield service


@dataclass
class Answer:
    names: list[str]
    frame: pd.DataFrame
    metadata: dict[str, Any]
    disposition: str

    @property
    def vectors(self) -> np.ndarray:
        return np.array(self.frame["embedding"].tolist(), dtype=np.float32)


def upload(service: Service, content: bytes, filename: str = "document.txt", **params: str) -> httpx.Response:
    return httpx.post(f"{service.base_url}/get_all_embeddings_for_document/", params=params,
                      files={"file": (filename, content)}, timeout=300)


def unpack(response: httpx.Response, orient: str = "records") -> Answer:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    names = sorted(archive.namelist())
    data = next(name for name in names if not name.endswith(".metadata.json"))
    metadata = next(name for name in names if name.endswith(".metadata.json"))
    frame = pd.read_json(io.StringIO(archive.read(data).decode("utf-8")), orient=orient)
    if orient == "values":
        frame.columns = ["text", "embedding"]
    return Answer(names, frame, json.loads(archive.read(metadata)), response.headers["content-disposition"])


def row_counts(service: Service) -> dict[str, int]:
    engine = database_engine(service.database_url, read_only=True)
    try:
        with engine.connect() as connection:
            return {table.name: int(connection.execute(select(func.count()).select_from(table)).scalar_one())
                    for table in (embeddings, documents, document_embeddings)}
    finally:
        engine.dispose()


def stored_filenames(service: Service, **params: int) -> list[str]:
    response = httpx.get(f"{service.base_url}/get_all_stored_documents_with_embeddings/", params=params, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["documents"]


def wait_until_stored(service: Service, filename: str) -> None:
    service.wait_for(lambda: filename in stored_filenames(service), timeout=10, message=f"{filename} stored")


def assert_one_unit_vector_per_sentence(answer: Answer, sentences: list[str]) -> None:
    assert list(answer.frame["text"]) == sentences
    assert answer.vectors.shape == (len(sentences), 384)
    assert np.allclose(np.linalg.norm(answer.vectors, axis=1), 1.0, atol=1e-5)
    assert answer.metadata["sentence_count"] == len(sentences) and answer.metadata["dimensions"] == 384


@pytest.mark.parametrize("encode", [
    lambda text: text.encode("utf-8"),
    lambda text: text.encode("utf-16"),  # little-endian with a byte order mark
    lambda text: text.encode("latin-1"),
], ids=["utf-8", "utf-16 with BOM", "latin-1"])
def test_a_text_file_gives_one_vector_per_kept_sentence_in_each_encoding(service: Service,
                                                                        encode: Callable[[str], bytes]) -> None:
    answer = unpack(upload(service, encode(ACCENTED_TEXT), "notes.txt"))
    assert answer.names == ["notes.json", "notes.metadata.json"]
    assert_one_unit_vector_per_sentence(answer, ACCENTED_SENTENCES)


@pytest.mark.parametrize("make", [fpdf_pdf, ghostscript_pdf], ids=["fpdf2", "ghostscript"])
def test_a_multi_page_pdf_gives_one_vector_per_sentence_of_every_page(service: Service,
                                                                      make: Callable[[list[str]], bytes]) -> None:
    sentences = prose(36, seed=len(make.__name__))  # a different text for each producer
    pages = [" ".join(sentences[start:start + 12]) for start in range(0, 36, 12)]  # each line-wrapped by the producer
    answer = unpack(upload(service, make(pages), f"{make.__name__}.pdf"))
    assert_one_unit_vector_per_sentence(answer, sentences)
    assert answer.metadata["mimetype"] == "application/pdf"


@pytest.mark.parametrize("algorithm", ["AES-128", "AES-256"])
def test_an_aes_encrypted_pdf_that_opens_with_the_empty_password_is_embedded(service: Service, algorithm: str) -> None:
    sentences = prose(6, seed=len(algorithm))
    answer = unpack(upload(service, aes_encrypted_pdf([" ".join(sentences)], algorithm), f"{algorithm}.pdf"))
    assert_one_unit_vector_per_sentence(answer, sentences)
    wait_until_stored(service, f"{algorithm}.pdf")


def test_the_vectors_are_the_ones_the_model_gives_each_sentence(service: Service,
                                                               minilm_reference: ReferenceEngine) -> None:
    # The reference engine runs outside the service, so no cache of the service can answer for it.
    answer = unpack(upload(service, ACCENTED_TEXT.encode("utf-8"), "compare.txt"))
    assert np.allclose(answer.vectors, minilm_reference.embed(ACCENTED_SENTENCES), atol=1e-5)


@pytest.mark.parametrize("orient", ORIENTS)
def test_every_json_format_round_trips_through_pandas_read_json(service: Service, orient: str) -> None:
    answer = unpack(upload(service, ACCENTED_TEXT.encode("utf-8"), "orients.txt", json_format=orient), orient)
    assert_one_unit_vector_per_sentence(answer, ACCENTED_SENTENCES)
    assert answer.metadata["json_format"] == orient


def test_the_metadata_names_model_pooling_and_file_hash(service: Service) -> None:
    content = b"The metadata entry describes how these vectors were made."
    metadata = unpack(upload(service, content, "meta.txt")).metadata
    assert metadata["model"] == MINILM and metadata["pooling"] == "mean"
    assert metadata["file_hash"] == hashlib.sha3_256(content).hexdigest()
    assert metadata["sentence_count"] == 1


def test_uploading_the_same_file_again_answers_from_the_store_in_the_new_orient(service: Service) -> None:
    content = " ".join(prose(20, seed=501)).encode()
    first = unpack(upload(service, content, "again.txt"))
    wait_until_stored(service, "again.txt")
    time.sleep(1.2)  # workers report their counters every second
    served_before = sum(worker["texts"] for worker in service.workers(MINILM))
    second = unpack(upload(service, content, "again.txt", json_format="split"), "split")
    time.sleep(1.2)
    assert sum(worker["texts"] for worker in service.workers(MINILM)) == served_before
    assert first.metadata["from_store"] is False and second.metadata["from_store"] is True
    assert second.metadata["json_format"] == "split"
    assert list(second.frame["text"]) == list(first.frame["text"])
    assert np.array_equal(second.vectors, first.vectors)


def test_every_sentence_row_points_at_its_document(service: Service) -> None:
    sentences = prose(8, seed=777)
    httpx.post(f"{service.base_url}/get_embedding_vector/", json={"text": sentences[0]}, timeout=60)  # cached before
    content = " ".join(sentences).encode()
    unpack(upload(service, content, "linked.txt"))
    wait_until_stored(service, "linked.txt")
    engine = database_engine(service.database_url, read_only=True)
    try:
        with engine.connect() as connection:
            document_id = connection.execute(select(documents.c.id).where(
                documents.c.document_hash == hashlib.sha3_256(content).hexdigest())).scalar_one()
            linked = dict(connection.execute(select(embeddings.c.text_hash, embeddings.c.document_id).where(
                embeddings.c.text_hash.in_([text_hash(text) for text in sentences]))).all())
    finally:
        engine.dispose()
    assert linked == {text_hash(text): document_id for text in sentences}


def test_model_and_format_are_accepted_as_form_fields(service: Service) -> None:
    response = httpx.post(f"{service.base_url}/get_all_embeddings_for_document/", timeout=120,
                          files={"file": ("form.txt", ACCENTED_TEXT.encode())},
                          data={"llm_model_name": MINILM, "json_format": "values"})
    answer = unpack(response, "values")
    assert answer.metadata["model"] == MINILM and answer.metadata["json_format"] == "values"
    assert list(answer.frame["text"]) == ACCENTED_SENTENCES


def test_the_client_file_name_only_names_the_zip_and_is_stored_as_given(service: Service) -> None:
    hostile = "../../tmp/evil name.txt"
    answer = unpack(upload(service, b"A file with a hostile name is still a document.", hostile))
    assert answer.disposition == 'attachment; filename="evil_name.zip"'
    assert answer.names == ["evil_name.json", "evil_name.metadata.json"]
    wait_until_stored(service, hostile)


def test_stored_documents_are_listed_by_file_name_and_paginate(service: Service) -> None:
    for number in range(3):
        unpack(upload(service, f"Listing test document number {number} has one sentence.".encode(), f"list-{number}.txt"))
    wait_until_stored(service, "list-2.txt")
    names = stored_filenames(service)
    assert len(names) == len(set(names))
    assert stored_filenames(service, offset=1, limit=2) == names[1:3]


BAD_INPUTS = {
    "an image": (png_image, {}, 415, "image/png"),
    "a binary file": (lambda: os.urandom(8192), {}, 415, "unsupported file type"),
    "an encrypted PDF": (lambda: fpdf_pdf(["A secret sentence on a locked page."], user_password="pw"), {}, 422,
                         "encrypted"),
    "an AES-256 PDF that needs a user password": (
        lambda: aes_encrypted_pdf(["A secret sentence on a locked page."], "AES-256", user_password="pw"), {}, 422,
        "encrypted"),
    "a PDF without a text layer": (image_only_pdf, {}, 422, "no extractable text; OCR is not supported"),
    "an empty file": (lambda: b"", {}, 422, "empty"),
    "a file without sentences": (lambda: b"Hi. Ok. Yes.", {}, 422, "no sentences"),
    "a file over MAX_UPLOAD_SIZE_MB": (lambda: b"All work and no play. " * (UPLOAD_LIMIT_MB * 50_000), {}, 413,
                                       "MAX_UPLOAD_SIZE_MB"),
    "an unknown orient": (lambda: ACCENTED_TEXT.encode(), {"json_format": "rows"}, 422, "json_format"),
    "an unknown model": (lambda: ACCENTED_TEXT.encode(), {"model_name": "nope"}, 422, "nope"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_its_status_code_and_stores_nothing(service: Service, case: str) -> None:
    make, params, status, detail = BAD_INPUTS[case]
    time.sleep(0.5)  # rows of an earlier test may still wait for the writer's flush interval
    before = row_counts(service)
    response = upload(service, make(), "bad.bin", **params)
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]
    time.sleep(0.5)  # longer than the writer's flush interval
    assert row_counts(service) == before


def test_the_openapi_document_declares_a_multipart_upload_and_a_zip_answer(service: Service) -> None:
    paths = httpx.get(f"{service.base_url}/openapi.json").json()["paths"]
    operation = paths["/get_all_embeddings_for_document/"]["post"]
    assert "file" in operation["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert "application/zip" in operation["responses"]["200"]["content"]
    assert {"413", "415", "422"} <= set(operation["responses"])
    assert "get" in paths["/get_all_stored_documents_with_embeddings/"]


