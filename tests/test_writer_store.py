"""The writer's inserts on a real SQLite store: ids, columns, duplicates and the keyword index."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DatabaseError

from shared.protocol import Delete, EmbeddingRow
from shared.schema import embeddings, text_hash
from workers.writer.deletion import delete_stored
from workers.writer.store import EmbeddingStore, RetryPolicy, column_time

REQUESTED_AT = 1_764_000_000.25  # Unix seconds, with a fraction


def open_store(path: Path) -> EmbeddingStore:
    return EmbeddingStore(f"sqlite:///{path}", RetryPolicy(3, 0.01, 0.1))


@pytest.fixture
def store(tmp_path: Path) -> EmbeddingStore:
    return open_store(tmp_path / "store.sqlite")


def row(text: str, model: str = "m") -> EmbeddingRow:
    return EmbeddingRow(text, text_hash(text), model, b"\x01" * 8, 2, ip_address="10.0.0.1",
                        request_time=REQUESTED_AT, response_time=REQUESTED_AT + 0.5, total_time=0.5)


def keyword_matches(store: EmbeddingStore, word: str) -> int:
    query = text("SELECT count(*) FROM embeddings_fts WHERE embeddings_fts MATCH :word").bindparams(word=word)
    return int(store.run_in_transaction(lambda connection: connection.execute(query).scalar()) or 0)


def test_insert_counts_only_the_rows_not_stored_before(store: EmbeddingStore) -> None:
    assert store.insert_embeddings([row("a"), row("b")]).new == 2
    assert store.insert_embeddings([row("b"), row("c"), row("a", "other model")]).new == 2


def test_a_stored_row_reads_back_with_every_column_as_sent(store: EmbeddingStore) -> None:
    store.insert_embeddings([row("the text")])
    stored = store.run_in_transaction(lambda connection: connection.execute(select(embeddings)).one())
    assert (stored.text, stored.text_hash, stored.model_name) == ("the text", text_hash("the text"), "m")
    assert (stored.embedding, stored.dimensions, stored.ip_address) == (b"\x01" * 8, 2, "10.0.0.1")
    assert stored.request_time == column_time(REQUESTED_AT)
    assert stored.response_time == column_time(REQUESTED_AT + 0.5) and stored.total_time == 0.5


def test_inserted_rows_are_in_the_keyword_index_when_their_commit_returns(store: EmbeddingStore) -> None:
    store.insert_embeddings([row("a zebra crossing"), row("zebra finches sing"), row("no stripes")])
    assert keyword_matches(store, "zebra") == 2 and keyword_index_matches_the_rows(store)


def test_a_duplicate_insert_adds_nothing_to_the_keyword_index(store: EmbeddingStore) -> None:
    store.insert_embeddings([row("a zebra crossing")])
    store.insert_embeddings([row("a zebra crossing"), row("unrelated")])
    assert keyword_matches(store, "zebra") == 1


def keyword_index_matches_the_rows(store: EmbeddingStore) -> bool:
    """FTS5's own check of an external-content index against its table: every row indexed, each once."""
    try:
        store.run_in_transaction(lambda connection: connection.exec_driver_sql(
            "INSERT INTO embeddings_fts(embeddings_fts, rank) VALUES ('integrity-check', 1)"))
    except DatabaseError:
        return False
    return True


def test_a_database_from_before_indexes_each_new_row_once(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    open_store(path).close()
    with sqlite3.connect(path) as old:  # the per-row trigger the schema had before
        old.execute("CREATE TRIGGER embeddings_fts_insert AFTER INSERT ON embeddings BEGIN "
                    "INSERT INTO embeddings_fts(rowid, text) VALUES (new.id, new.text); END")
    store = open_store(path)
    store.insert_embeddings([row("a zebra crossing")])
    assert keyword_index_matches_the_rows(store)


def test_ids_keep_growing_after_the_newest_row_is_deleted(store: EmbeddingStore) -> None:
    store.insert_embeddings([row("a"), row("b")])
    delete_stored(store, Delete(1, "string", text_hash("b")))
    store.insert_embeddings([row("c")])
    ids = store.run_in_transaction(lambda connection: dict(connection.execute(
        select(embeddings.c.text, embeddings.c.id)).all()))
    assert ids == {"a": 1, "c": 3}


def test_an_insert_reports_the_marks_its_transaction_left(store: EmbeddingStore) -> None:
    store.insert_embeddings([row("a"), row("b")])
    delete_stored(store, Delete(1, "string", text_hash("b")))
    insertion = store.insert_embeddings([row("a"), row("c")])  # one new row, one already stored
    assert insertion.marks is not None and insertion.marks == store.marks()
    assert insertion.marks.rows > 2 and insertion.marks.deletions == 1
