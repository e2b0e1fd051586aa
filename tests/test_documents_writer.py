"""The writer's document writes (workers/writer/documents.py) on a real SQLite file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from shared.protocol import DocumentWrite, EmbeddingRow, StoredDocument, decode, encode
from shared.schema import document_embeddings, documents, embeddings, sqlite_engine, text_hash
from workers.writer.documents import write_document
from workers.writer.store import EmbeddingStore, RetryPolicy

MODEL = "all-minilm-l6-v2"


def row(text: str) -> EmbeddingRow:
    return EmbeddingRow(text, text_hash(text), MODEL, np.ones(4, dtype=np.float32).tobytes(), 4,
                        request_time=1.0, response_time=2.0)


def message(batch_id: int, rows: list[EmbeddingRow], sentences: list[str], file_hash: str = "f" * 64) -> DocumentWrite:
    document = StoredDocument(file_hash=file_hash, model_name=MODEL, filename="a.txt", mimetype="text/plain",
                              file_data=b"file bytes", sentence_count=len(sentences), results=b"results",
                              request_time=1.0, response_time=2.0, total_time=1.0)
    return DocumentWrite(batch_id=batch_id, document=document, rows=rows,
                         text_hashes=[text_hash(text) for text in sentences])


@pytest.fixture
def store(tmp_path: Path) -> EmbeddingStore:
    return EmbeddingStore(f"sqlite:///{tmp_path / 'db.sqlite'}", RetryPolicy(3, 0.01, 0.1))


def count(store_path: Path, table: Any) -> int:
    with sqlite_engine(store_path, read_only=True).connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def document_ids(store_path: Path) -> dict[str, int | None]:
    with sqlite_engine(store_path, read_only=True).connect() as connection:
        return dict(connection.execute(select(embeddings.c.text, embeddings.c.document_id)).all())


def test_a_document_its_results_and_its_new_sentence_rows_are_stored_together(store: EmbeddingStore, tmp_path: Path) -> None:
    assert write_document(store, message(1, [row("first sentence"), row("second sentence")],
                                         ["first sentence", "second sentence"])) == 2
    path = tmp_path / "db.sqlite"
    assert count(path, documents) == 1 and count(path, document_embeddings) == 1
    [document_id] = set(document_ids(path).values())
    assert document_id is not None


def test_a_sentence_stored_before_without_a_document_is_linked_to_it(store: EmbeddingStore, tmp_path: Path) -> None:
    store.insert_embeddings([row("cached earlier")])
    write_document(store, message(1, [row("new one")], ["cached earlier", "new one"]))
    ids = document_ids(tmp_path / "db.sqlite")
    assert ids["cached earlier"] == ids["new one"] is not None


def test_a_sentence_keeps_the_first_document_it_was_seen_in(store: EmbeddingStore, tmp_path: Path) -> None:
    write_document(store, message(1, [row("shared sentence")], ["shared sentence"], file_hash="a" * 64))
    first = document_ids(tmp_path / "db.sqlite")["shared sentence"]
    write_document(store, message(2, [], ["shared sentence"], file_hash="b" * 64))
    assert document_ids(tmp_path / "db.sqlite")["shared sentence"] == first
    assert count(tmp_path / "db.sqlite", documents) == 2


def test_writing_the_same_document_again_changes_nothing(store: EmbeddingStore, tmp_path: Path) -> None:
    write = message(1, [row("only sentence")], ["only sentence"])
    write_document(store, write)
    assert write_document(store, write) == 0
    path = tmp_path / "db.sqlite"
    assert (count(path, documents), count(path, document_embeddings), count(path, embeddings)) == (1, 1, 1)


def test_a_document_write_survives_the_wire() -> None:
    original = message(7, [row("over the wire")], ["over the wire"])
    assert decode(encode(original)) == original
