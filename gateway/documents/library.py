"""The stored documents, read-only: a re-upload is answered from here, and the listing endpoint reads here.

A document's results are stored as the list of its kept sentences, in order, zlib-compressed JSON: with the
sentences' rows in `embeddings` (keyed by text hash and model) that regenerates the answer in any orient, so
a re-upload may ask for a different `json_format` than the first upload did, and nothing is stored twice.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from shared.schema import document_embeddings, first_column_page, sqlite_engine

RESULTS_FORMAT = "sentences-v1"  # recorded in the metadata entry of every answer


def encode_results(sentences: list[str]) -> bytes:
    return zlib.compress(json.dumps({"format": RESULTS_FORMAT, "sentences": sentences}).encode("utf-8"))


def decode_results(blob: bytes) -> list[str]:
    stored = json.loads(zlib.decompress(blob))
    if stored.get("format") != RESULTS_FORMAT:
        raise ValueError(f"stored results in an unknown format {stored.get('format')!r}")
    return list(stored["sentences"])


@dataclass(frozen=True)
class StoredDocument:
    filename: str
    mimetype: str
    sentences: list[str]


class DocumentLibrary:
    def __init__(self, database_path: Path) -> None:
        self._engine = sqlite_engine(database_path, read_only=True)

    async def find(self, file_hash: str, model: str) -> StoredDocument | None:
        """The stored document with these bytes embedded by this model, if any."""
        return await asyncio.to_thread(self._find, file_hash, model)

    def _find(self, file_hash: str, model: str) -> StoredDocument | None:
        query = select(document_embeddings.c.filename, document_embeddings.c.mimetype,
                       document_embeddings.c.document_embedding_results_json).where(
            document_embeddings.c.file_hash == file_hash, document_embeddings.c.model_name == model)
        with self._engine.connect() as connection:
            row = connection.execute(query).first()
        if row is None:
            return None
        return StoredDocument(row.filename or "", row.mimetype or "", decode_results(row.document_embedding_results_json))

    async def filenames(self, offset: int, limit: int | None) -> list[str]:
        """Distinct file names of the stored documents, in the order they were first stored."""
        return await asyncio.to_thread(self._filenames, offset, limit)

    def _filenames(self, offset: int, limit: int | None) -> list[str]:
        first_stored = func.min(document_embeddings.c.id)
        query = select(document_embeddings.c.filename).group_by(document_embeddings.c.filename).order_by(first_stored)
        return first_column_page(self._engine, query, offset, limit)

    def close(self) -> None:
        self._engine.dispose()
