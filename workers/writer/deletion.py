"""The writer's deletes: a stored string, a collection or a document, in one transaction.

Rows go with their memberships and their keyword-index entries (the FTS triggers); each deleted row is also
logged in `deletions`, which gateways read to drop it from their caches and search tails and indexers to
remove its id from their FAISS indexes. A collection or document takes with it the texts it leaves in no other
collection or document (a text embedded on its own and also added to a collection goes with the collection:
the store does not record plain requests as a group).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Iterable, Iterator, Sequence

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from shared.protocol import Delete, Deleted, DeletedRow
from shared.schema import (
    COLLECTION,
    DOCUMENT,
    deletions,
    document_embeddings,
    documents,
    embeddings,
    memberships,
    parameter_chunks,
)
from workers.writer.store import EmbeddingStore

TARGETS = ("string", COLLECTION, DOCUMENT)
_Text = tuple[str, str]  # (model_name, text_hash)


def delete_stored(store: EmbeddingStore, message: Delete) -> Deleted:
    """Carry out `message` in one transaction and say what it removed."""
    if message.target not in TARGETS:
        return Deleted(request_id=message.request_id, found=False, error=f"unknown delete target {message.target!r}")
    found, rows = store.run_in_transaction(lambda connection: _delete(connection, message))
    return Deleted(request_id=message.request_id, found=found, rows=rows)


def _delete(connection: Connection, message: Delete) -> tuple[bool, list[DeletedRow]]:
    if message.target == "string":
        query = select(embeddings.c.model_name, embeddings.c.text_hash).where(embeddings.c.text_hash == message.name)
        if message.model_name:
            query = query.where(embeddings.c.model_name == message.model_name)
        texts: list[_Text] = [(model, text_hash) for model, text_hash in connection.execute(query)]
        _forget_memberships(connection, texts)
        return bool(texts), _delete_rows(connection, texts)
    if message.target == COLLECTION:
        members = _members(connection, COLLECTION, message.name)
        connection.execute(delete(memberships).where(memberships.c.kind == COLLECTION,
                                                     memberships.c.name == message.name))
        return bool(members), _delete_rows(connection, _left_alone(connection, members))
    return _delete_document(connection, message.name)


def _delete_document(connection: Connection, file_hash: str) -> tuple[bool, list[DeletedRow]]:
    document_ids = [row_id for (row_id,) in connection.execute(
        select(documents.c.id).where(documents.c.document_hash == file_hash))]
    members = _members(connection, DOCUMENT, file_hash)
    # Documents stored before memberships existed are known by their rows' document_id only.
    for chunk in parameter_chunks(document_ids):
        members |= {(model, text_hash) for model, text_hash in connection.execute(
            select(embeddings.c.model_name, embeddings.c.text_hash).where(embeddings.c.document_id.in_(chunk)))}
    found = bool(document_ids) or bool(members)
    connection.execute(delete(memberships).where(memberships.c.kind == DOCUMENT, memberships.c.name == file_hash))
    deleted = _delete_rows(connection, _left_alone(connection, members))
    for chunk in parameter_chunks(document_ids):  # kept sentences no longer point at the document
        connection.execute(update(embeddings).where(embeddings.c.document_id.in_(chunk)).values(document_id=None))
    connection.execute(delete(document_embeddings).where(document_embeddings.c.file_hash == file_hash))
    connection.execute(delete(documents).where(documents.c.document_hash == file_hash))
    return found, deleted


def _members(connection: Connection, kind: str, name: str) -> set[_Text]:
    query = select(memberships.c.model_name, memberships.c.text_hash).where(memberships.c.kind == kind,
                                                                           memberships.c.name == name)
    return {(model, text_hash) for model, text_hash in connection.execute(query)}


def _left_alone(connection: Connection, texts: set[_Text]) -> list[_Text]:
    """Those of `texts` (already out of the group being deleted) that no other collection or document holds."""
    held: set[_Text] = set()
    for model, hashes in _by_model(texts):
        query = select(memberships.c.text_hash).where(memberships.c.model_name == model,
                                                      memberships.c.text_hash.in_(hashes))
        held |= {(model, text_hash) for (text_hash,) in connection.execute(query)}
    return sorted(texts - held)


def _forget_memberships(connection: Connection, texts: list[_Text]) -> None:
    for model, hashes in _by_model(texts):
        connection.execute(delete(memberships).where(memberships.c.model_name == model,
                                                     memberships.c.text_hash.in_(hashes)))


def _by_model(texts: Iterable[_Text]) -> Iterator[tuple[str, Sequence[str]]]:
    """The texts' hashes per model, in slices for one `IN (...)` each: a `(model, hash) IN (VALUES ...)` row
    value made SQLite scan the whole table (10,000 deletes from 1M rows took 4.9 s); `model = ? AND hash IN`
    uses the index."""
    grouped: dict[str, list[str]] = {}
    for model, text_hash in texts:
        grouped.setdefault(model, []).append(text_hash)
    for model, hashes in grouped.items():
        for chunk in parameter_chunks(hashes):
            yield model, chunk


def _delete_rows(connection: Connection, texts: list[_Text]) -> list[DeletedRow]:
    """Delete the `embeddings` rows of `texts` and log each in `deletions`."""
    deleted: list[DeletedRow] = []
    for model, hashes in _by_model(texts):
        rows = [DeletedRow(row_id, model, text_hash) for row_id, text_hash in connection.execute(
            select(embeddings.c.id, embeddings.c.text_hash).where(embeddings.c.model_name == model,
                                                                  embeddings.c.text_hash.in_(hashes)))]
        if not rows:
            continue
        connection.execute(delete(embeddings).where(embeddings.c.id.in_([row.row_id for row in rows])))
        now = datetime.now(UTC).replace(tzinfo=None)
        connection.execute(insert(deletions), [{"row_id": row.row_id, "model_name": row.model_name,
                                                "text_hash": row.text_hash, "deleted_at": now} for row in rows])
        deleted.extend(rows)
    return deleted
