"""The writer's deletes on a real SQLite store: rows, memberships, keyword entries and the deletions log."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from shared.protocol import Delete, EmbeddingRow
from shared.schema import deletions, embeddings, memberships, text_hash
from workers.writer.deletion import delete_stored
from workers.writer.store import EmbeddingStore, RetryPolicy


@pytest.fixture
def store(tmp_path: Path) -> EmbeddingStore:
    return EmbeddingStore(f"sqlite:///{tmp_path / 'store.sqlite'}", RetryPolicy(3, 0.01, 0.1))


def row(text: str, model: str = "m", collection: str = "") -> EmbeddingRow:
    return EmbeddingRow(text, text_hash(text), model, b"\x00" * 8, 2, collection=collection)


def count(store: EmbeddingStore, query: str) -> int:
    return int(store.run_in_transaction(lambda connection: connection.execute(text(query)).scalar()) or 0)


def test_deleting_a_string_without_a_model_removes_it_from_every_model_and_logs_each_row(store: EmbeddingStore) -> None:
    store.insert_embeddings([row("a", "m1", "c"), row("a", "m2"), row("b", "m1")])
    reply = delete_stored(store, Delete(1, "string", text_hash("a")))
    assert reply.found and sorted(r.model_name for r in reply.rows) == ["m1", "m2"]
    assert count(store, "SELECT count(*) FROM embeddings") == 1
    assert count(store, "SELECT count(*) FROM memberships") == 0
    assert count(store, "SELECT count(*) FROM deletions") == 2


def test_deleting_a_string_of_one_model_keeps_the_other_models_row(store: EmbeddingStore) -> None:
    store.insert_embeddings([row("a", "m1"), row("a", "m2")])
    reply = delete_stored(store, Delete(1, "string", text_hash("a"), "m2"))
    assert [r.model_name for r in reply.rows] == ["m2"]
    assert count(store, "SELECT count(*) FROM embeddings WHERE model_name = 'm1'") == 1


def test_a_deleted_row_leaves_the_keyword_index(store: EmbeddingStore) -> None:
    store.insert_embeddings([row("the zebra crossing"), row("a zebra finch")])
    delete_stored(store, Delete(1, "string", text_hash("a zebra finch")))
    assert count(store, "SELECT count(*) FROM embeddings_fts WHERE embeddings_fts MATCH 'zebra'") == 1


def test_deleting_a_collection_keeps_texts_another_collection_holds(store: EmbeddingStore) -> None:
    store.insert_embeddings([row("shared", collection="one"), row("shared", collection="two"),
                             row("alone", collection="one")])
    reply = delete_stored(store, Delete(1, "collection", "one"))
    assert [r.text_hash for r in reply.rows] == [text_hash("alone")]
    names = store.run_in_transaction(lambda c: c.execute(select(memberships.c.name)).scalars().all())
    assert names == ["two"]


def test_deleting_nothing_that_exists_says_not_found(store: EmbeddingStore) -> None:
    assert not delete_stored(store, Delete(1, "collection", "none")).found
    assert not delete_stored(store, Delete(2, "string", text_hash("none"))).found
    assert not delete_stored(store, Delete(3, "document", "0" * 64)).found


def test_an_unknown_target_is_refused_without_touching_the_store(store: EmbeddingStore) -> None:
    store.insert_embeddings([row("a")])
    assert delete_stored(store, Delete(1, "everything", "")).error
    assert store.run_in_transaction(lambda c: c.execute(select(func.count()).select_from(embeddings)).scalar()) == 1
    assert store.run_in_transaction(lambda c: c.execute(select(func.count()).select_from(deletions)).scalar()) == 0


def test_a_row_written_after_the_newest_was_deleted_gets_a_new_id_not_the_deleted_ones(store: EmbeddingStore) -> None:
    """SQLite would hand the deleted id out again; the index and the deletions log need ids that only grow."""
    store.insert_embeddings([row("old"), row("newest")])
    [deleted] = delete_stored(store, Delete(1, "string", text_hash("newest"))).rows
    store.insert_embeddings([row("after")])
    new_id = store.run_in_transaction(lambda c: c.execute(
        select(embeddings.c.id).where(embeddings.c.text_hash == text_hash("after"))).scalar_one())
    assert new_id > deleted.row_id
