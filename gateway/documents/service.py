"""An uploaded document → the vector of every sentence, stored by the writer; the same file again → the
stored answer.

Sentences go to the workers through EmbeddingService (cache, de-duplication, batching inside the worker)
in chunks of DOCUMENT_CHUNK_SENTENCES, DOCUMENT_CHUNKS_IN_FLIGHT per live worker of the model at a time:
two per worker keep it busy (one computing, the next already there), while a chunk's wait stays far below
REQUEST_TIMEOUT_SECONDS (a worker computes what it holds together, so everything sent at once finishes at
once) and other clients' requests are served between a long document's chunks.
The vectors computed for a document are not queued as plain rows: they travel with the document in one
DOCUMENT_WRITE, so the writer stores the document, its results and its sentence rows (pointing at it) in
one transaction. Nothing is sent to the writer before the document has been read and split, so a file
refused for any reason leaves no row behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from gateway.broker import Broker
from gateway.database import ReadOnlyDatabase
from gateway.documents.results_blob import encode_results
from gateway.documents.sentences import SentenceSplitter
from gateway.documents.sniffing import Sniffed, sniff
from gateway.documents.text_extraction import decode_text, pdf_text
from gateway.documents.upload import Upload
from gateway.embedding_service import Embedded, EmbeddingService
from gateway.errors import BadRequest
from gateway.writer_link import WriterLink
from shared.protocol import DocumentWrite, EmbeddingRow, StoredDocument
from shared.schema import text_hash
from shared.settings import Settings

log = logging.getLogger(__name__)
PROGRESS_LOG_SECONDS = 2.0
# progress(done, total): distinct sentences embedded so far of the document's distinct sentences; called with
# (0, total) as soon as the text is split, then after every chunk. A document job reports it to its clients.
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class EmbeddedDocument:
    """What a document upload is answered with: its sentences, one vector per sentence, and the metadata."""

    sentences: list[str]
    vectors: np.ndarray  # float32, one L2-normalised row per sentence
    metadata: dict[str, Any]

    def archive_metadata(self, orient: str) -> dict[str, Any]:
        """What `<stem>.metadata.json` of the answer's zip holds when its JSON is in `orient`."""
        return {**self.metadata, "json_format": orient}


class DocumentService:
    """Uploads become embedded documents here; the document routes call `embed`."""

    def __init__(self, settings: Settings, embeddings: EmbeddingService, database: ReadOnlyDatabase,
                 writer: WriterLink, broker: Broker) -> None:
        self._settings = settings
        self._broker = broker
        self._embeddings = embeddings
        self._database = database
        self._writer = writer

    async def embed(self, upload: Upload, model: str, client_ip: str | None,
                    progress: ProgressCallback | None = None, collection: str | None = None) -> EmbeddedDocument:
        """The document's sentences and vectors, the sentences also added to `collection` when given. Raises
        GatewayError subclasses (415, 422, ...) for the client. `progress` hears how far embedding has come (see
        ProgressCallback)."""
        started = time.time()
        file_hash = await asyncio.to_thread(lambda: hashlib.sha3_256(upload.content).hexdigest())  # 50 MB: 0.1 s
        label = f"document {file_hash[:12]} ({model})"
        stored = await self._database.find_document(file_hash, model)
        if stored is not None:
            log.info("%s: known; answering from the store (%d sentences)", label, len(stored.sentences))
            vectors = await self._embed_in_chunks(model, stored.sentences, client_ip, label, None, progress,
                                                  collection)
            return EmbeddedDocument(stored.sentences, vectors,
                                    self._metadata(upload, stored.mimetype, file_hash, model, vectors, True))
        sniffed = sniff(upload.content)
        sentences = await asyncio.to_thread(self._sentences, upload.content, sniffed)
        minimum = self._settings.minimum_string_length_for_document_embedding
        if not sentences:
            raise BadRequest(f"no sentences in the document (sentences shorter than "
                             f"MINIMUM_STRING_LENGTH_FOR_DOCUMENT_EMBEDDING={minimum} characters are skipped)")
        log.info("%s: %s of %d bytes, %d sentences", label, sniffed.mimetype, len(upload.content), len(sentences))
        computed_rows: list[EmbeddingRow] = []
        vectors = await self._embed_in_chunks(model, sentences, client_ip, label, computed_rows, progress,
                                              collection)
        finished = time.time()
        document = StoredDocument(
            file_hash=file_hash, model_name=model, filename=upload.filename, mimetype=sniffed.mimetype,
            file_data=upload.content, sentence_count=len(sentences), results=encode_results(sentences),
            ip_address=client_ip, request_time=started, response_time=finished, total_time=finished - started)
        hashes = [text_hash(text) for text in dict.fromkeys(sentences)]
        self._writer.send_acknowledged(
            lambda batch_id: DocumentWrite(batch_id=batch_id, document=document, rows=computed_rows, text_hashes=hashes))
        return EmbeddedDocument(sentences, vectors,
                                self._metadata(upload, sniffed.mimetype, file_hash, model, vectors, False))

    def _sentences(self, content: bytes, sniffed: Sniffed) -> list[str]:
        text = pdf_text(content) if sniffed.kind == "pdf" else decode_text(content, sniffed.encoding)
        return SentenceSplitter(self._settings.minimum_string_length_for_document_embedding).split(text)

    async def _embed_in_chunks(self, model: str, sentences: list[str], client_ip: str | None, label: str,
                               computed_rows: list[EmbeddingRow] | None,
                               report: ProgressCallback | None, collection: str | None) -> np.ndarray:
        """One vector per sentence. Rows computed here go to `computed_rows` (None: to the writer as usual)."""
        unique = list(dict.fromkeys(sentences))
        size = self._settings.document_chunk_sentences
        workers = max(1, len(self._broker.live_workers(model)))
        gate = asyncio.Semaphore(self._settings.document_chunks_in_flight * workers)
        progress = _Progress(label, len(unique), report)

        async def embed_chunk(texts: list[str]) -> list[Embedded]:
            async with gate:
                embedded = await self._embeddings.embed(model, texts, client_ip=client_ip, row_sink=computed_rows,
                                                        collection=collection)
            progress.advance(len(texts))
            return embedded

        tasks = [asyncio.ensure_future(embed_chunk(unique[start:start + size])) for start in range(0, len(unique), size)]
        try:
            chunks = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if computed_rows:  # vectors computed before the failure are kept, as any request's are
                self._writer.enqueue(computed_rows)
            raise
        vectors = np.stack([item.vector for chunk in chunks for item in chunk])
        if len(unique) == len(sentences):
            return vectors
        row_of = {text: row for row, text in enumerate(unique)}
        return vectors[[row_of[text] for text in sentences]]

    def _pooling(self, model: str) -> str:
        # As the model's workers announce it (READY); a gateway that no worker has registered with yet cannot say.
        ready = self._broker.last_ready.get(model)
        return ready.pooling if ready is not None and ready.pooling else "unknown"

    def _metadata(self, upload: Upload, mimetype: str, file_hash: str, model: str, vectors: np.ndarray,
                  from_store: bool) -> dict[str, Any]:
        return {
            "filename": upload.filename, "mimetype": mimetype, "file_hash": file_hash, "file_hash_algorithm": "sha3-256",
            "model": model, "pooling": self._pooling(model), "normalised": True,
            "dimensions": int(vectors.shape[1]), "sentence_count": int(vectors.shape[0]),
            "minimum_sentence_length": self._settings.minimum_string_length_for_document_embedding,
            "from_store": from_store,
        }


class _Progress:
    """Logs how far a document has come, at most every PROGRESS_LOG_SECONDS and when it is done, and tells
    `report` after every chunk."""

    def __init__(self, label: str, total: int, report: ProgressCallback | None) -> None:
        self._label = label
        self._total = total
        self._done = 0
        self._started = time.monotonic()
        self._next_log = self._started + PROGRESS_LOG_SECONDS
        self._report = report
        if report is not None:
            report(0, total)

    def advance(self, count: int) -> None:
        self._done += count
        if self._report is not None:
            self._report(self._done, self._total)
        now = time.monotonic()
        if self._done < self._total and now < self._next_log:
            return
        elapsed = now - self._started
        log.info("%s: %d/%d distinct sentences embedded (%.0f%%) in %.1fs, %.0f sentences/s", self._label, self._done,
                 self._total, 100 * self._done / self._total, elapsed, self._done / elapsed if elapsed else 0)
        self._next_log = now + PROGRESS_LOG_SECONDS
