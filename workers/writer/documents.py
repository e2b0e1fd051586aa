"""The writer's document writes: the document, its stored results and its sentence rows, in one transaction.

Every statement is idempotent (a DOCUMENT_WRITE re-sent after a writer restart changes nothing), and the
sentence rows end up pointing at the document: new rows are inserted with its id, and rows that were already
stored without a document (cached from earlier requests) get it. A row already pointing at another document
keeps that one: `embeddings.document_id` names the first document a sentence was seen in.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from shared.protocol import DocumentWrite
from shared.schema import (
    DOCUMENT,
    document_embeddings,
    documents,
    embeddings,
    insert_ignoring_duplicates,
    parameter_chunks,
)
from workers.writer.store import (
    EmbeddingStore,
    collection_memberships,
    column_time,
    insert_memberships,
    insert_rows,
)


def write_document(store: EmbeddingStore, message: DocumentWrite) -> int:
    """Store the document of `message`; returns the number of new sentence rows."""
    return store.run_in_transaction(lambda connection: _write(connection, message))


def _write(connection: Connection, message: DocumentWrite) -> int:
    document = message.document
    model = document.model_name
    connection.execute(insert_ignoring_duplicates(connection, documents, ["document_hash", "model_name"]).values(
        model_name=model, document_hash=document.file_hash, filename=document.filename,
        mimetype=document.mimetype, sentence_count=document.sentence_count,
        created_at=column_time(document.response_time),
    ))
    document_id = connection.execute(select(documents.c.id).where(
        documents.c.document_hash == document.file_hash, documents.c.model_name == model)).scalar_one()
    connection.execute(insert_ignoring_duplicates(connection, document_embeddings, ["file_hash", "model_name"]).values(
        document_id=document_id, filename=document.filename, mimetype=document.mimetype,
        file_hash=document.file_hash, model_name=model, file_data=document.file_data,
        document_embedding_results_json=document.results, ip_address=document.ip_address,
        request_time=column_time(document.request_time), response_time=column_time(document.response_time),
        total_time=document.total_time,
    ))
    inserted = insert_rows(connection, message.rows, document_id)
    for chunk in parameter_chunks(message.text_hashes):
        connection.execute(update(embeddings).where(
            embeddings.c.model_name == model, embeddings.c.document_id.is_(None),
            embeddings.c.text_hash.in_(chunk),
        ).values(document_id=document_id))
    # Search scoped to the document, and deleting it, go by these (a sentence may be in several documents).
    insert_memberships(connection, [{"kind": DOCUMENT, "name": document.file_hash, "model_name": model,
                                     "text_hash": text_hash} for text_hash in dict.fromkeys(message.text_hashes)])
    insert_memberships(connection, collection_memberships(message.rows))
    return inserted

