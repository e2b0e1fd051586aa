"""Texts in, vectors out: the cache first, then one worker request for the misses, then the writer.

Identical texts requested at the same time are computed once: the second caller awaits the first one's
future instead of sending the text to a worker again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from gateway.broker import Broker
from gateway.cache import CachedVector, CacheKey, MemoryCache
from gateway.database import ReadOnlyDatabase
from gateway.errors import BadRequest, Unavailable
from gateway.model_roster import ModelRoster
from gateway.stored_hashes import StoredHashes
from gateway.token_ids import check_token_ids, token_ids_key
from gateway.writer_link import WriterLink
from shared.protocol import DeletedRow, EmbeddingRow
from shared.schema import text_hash


@dataclass(frozen=True)
class Embedded:
    """One input's vector, whether it came from a cache or the store, and its token count when known."""

    vector: np.ndarray
    cached: bool
    tokens: int | None = None  # as the worker counted them; None for a stored vector whose count is unknown


_MIN_PART = 16
_Computed = tuple[np.ndarray, int]  # a vector and its token count, as a worker returned them

# Told of every vector computed (model, texts, text hashes, vectors), before it is returned: search uses it
# to find a string as soon as its embedding exists, before the writer has indexed it.
ComputedListener = Callable[[str, list[str], list[str], np.ndarray], None]


@dataclass
class ServiceCounters:
    """Inputs answered without a worker, sent to one, or that awaited an identical input already computing."""

    cache_hits: int = 0
    cache_misses: int = 0
    deduplicated: int = 0
    store_unavailable: int = 0  # lookups the database did not answer (the texts were computed instead)
    store_lookups_skipped: int = 0  # misses of the memory cache whose hash the store cannot hold (never looked up)


class EmbeddingService:
    """The one way texts (and token-id lists) become vectors in the gateway; every route that embeds calls it."""

    def __init__(self, broker: Broker, cache: MemoryCache, database: ReadOnlyDatabase, writer: WriterLink,
                 models: ModelRoster, max_text_chars: int, stored_hashes: StoredHashes) -> None:
        self._broker = broker
        self._cache = cache
        self._database = database
        self._stored_hashes = stored_hashes
        self._writer = writer
        self.models = models
        self._max_text_chars = max_text_chars
        self._computing: dict[CacheKey, asyncio.Future[_Computed]] = {}
        self.counters = ServiceCounters()
        self.computed_listeners: list[ComputedListener] = []

    def check_model(self, model: str) -> str:
        """`model` when it is installed (served or not); BadRequest naming the served ones otherwise."""
        if not self.models.accepts(model):
            raise BadRequest(self.models.unknown_model_message(model))
        return model

    async def embed(self, model: str, texts: list[str], client_ip: str | None = None,
                    document_id: int | None = None, row_sink: list[EmbeddingRow] | None = None,
                    collection: str | None = None) -> list[Embedded]:
        """One vector per text, in order, each text added to `collection` when given. Raises GatewayError
        subclasses for the client.

        Rows computed here go to the writer, or into `row_sink` when given: the caller then sends them itself
        (a document sends them with the document, in one transaction).
        """
        self.check_model(model)
        for position, text in enumerate(texts):
            if len(text) > self._max_text_chars:
                raise BadRequest(f"text {position} has {len(text)} characters; MAX_TEXT_CHARS is {self._max_text_chars}")
        started = time.time()
        keys = [(model, text_hash(text)) for text in texts]
        results = self._remembered(keys)
        missing = list(dict.fromkeys(key for key in keys if key not in results))
        if missing:
            try:
                # A hash the store cannot hold (gateway/stored_hashes.py) is not looked up: almost every miss.
                hashes = self._stored_hashes.maybe_stored(model, [key[1] for key in missing])
                self.counters.store_lookups_skipped += len(missing) - len(hashes)
                stored = await self._database.vectors(model, hashes) if hashes else {}
            except Unavailable:
                # The database is down (restarting, say): computing is still right, only perhaps repeated, and
                # the writer holds the rows until it is back; stored strings and search answer 503 meanwhile.
                self.counters.store_unavailable += len(missing)
                stored = {}
            for key in missing:
                if key[1] in stored:
                    self._cache.put(key, CachedVector(stored[key[1]], None))
                    results[key] = Embedded(stored[key[1]], True)
        waiting: dict[CacheKey, asyncio.Future[_Computed]] = {}
        to_compute: dict[CacheKey, str] = {}
        for key, text in zip(keys, texts):
            if key in results or key in waiting or key in to_compute:
                continue
            if key in self._computing:
                waiting[key] = self._computing[key]
            else:
                to_compute[key] = text
        self.counters.cache_hits += len(keys) - len(waiting) - len(to_compute)
        self.counters.cache_misses += len(to_compute)
        self.counters.deduplicated += len(waiting)
        if to_compute:
            await self._compute(model, to_compute, results, client_ip, document_id, started, row_sink, collection)
        for key, future in waiting.items():
            vector, tokens = await future
            results[key] = Embedded(vector, False, tokens)
        if collection:
            self._add_to_collection(model, collection, dict(zip(keys, texts)), to_compute, results, row_sink)
        return [results[key] for key in keys]

    def _add_to_collection(self, model: str, collection: str, texts: dict[CacheKey, str],
                           computed: dict[CacheKey, str], results: dict[CacheKey, Embedded],
                           row_sink: list[EmbeddingRow] | None) -> None:
        """Rows for the texts not computed here (cache hits, or computed by another request), which the writer
        reads as "add to the collection": their stored rows stay as they are."""
        rows = [EmbeddingRow(text=text, text_hash=key[1], model_name=model, embedding=results[key].vector.tobytes(),
                             dimensions=int(results[key].vector.shape[0]), collection=collection)
                for key, text in texts.items() if key not in computed]
        if row_sink is not None:
            row_sink.extend(rows)
        elif rows:
            self._writer.enqueue(rows)

    def forget(self, rows: list[DeletedRow]) -> None:
        """Drop deleted rows from the memory cache, so the next request for their text computes it again."""
        for row in rows:
            self._cache.discard((row.model_name, row.text_hash))

    def _remembered(self, keys: list[CacheKey]) -> dict[CacheKey, Embedded]:
        """What the memory LRU holds of `keys`."""
        results: dict[CacheKey, Embedded] = {}
        for key in keys:
            entry = self._cache.get(key)
            if entry is not None:
                results[key] = Embedded(entry.vector, True, entry.tokens)
        return results

    async def embed_token_ids(self, model: str, token_lists: list[list[int]]) -> list[Embedded]:
        """One vector per token-id list, in order (gateway/token_ids.py says what the ids are).

        Cached in the in-memory LRU only: the table holds texts (stored strings, search and documents read
        it as such), so a vector with no text is not written to it.
        """
        self.check_model(model)
        check_token_ids(model, token_lists, self._broker.last_ready.get(model))
        keys = [(model, token_ids_key(ids)) for ids in token_lists]
        results = self._remembered(keys)
        missing = {key: ids for key, ids in zip(keys, token_lists) if key not in results}
        self.counters.cache_hits += len(keys) - len(missing)
        self.counters.cache_misses += len(missing)
        if missing:
            result = await self._broker.embed(model, [], token_ids=list(missing.values()))
            for row, key in enumerate(missing):
                count = result.token_counts[row]
                self._cache.put(key, CachedVector(result.vectors[row], count))
                results[key] = Embedded(result.vectors[row], False, count)
        return [results[key] for key in keys]

    async def _embed_spread(self, model: str, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """Vectors and token counts for `texts`; a large batch is split over the model's live workers.

        Workers have one thread each by default, so a batch sent whole would run on one core while the others
        idle. Parts of fewer than _MIN_PART texts are not worth their messages.
        """
        parts = max(1, min(len(self._broker.live_workers(model)), len(texts) // _MIN_PART))
        if parts == 1:
            result = await self._broker.embed(model, texts)
            return result.vectors, result.token_counts
        size = -(-len(texts) // parts)
        outcomes = await asyncio.gather(*(self._broker.embed(model, texts[i:i + size])
                                          for i in range(0, len(texts), size)), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        results = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
        return np.vstack([r.vectors for r in results]), [count for r in results for count in r.token_counts]

    async def _compute(self, model: str, to_compute: dict[CacheKey, str], results: dict[CacheKey, Embedded],
                       client_ip: str | None, document_id: int | None, started: float,
                       row_sink: list[EmbeddingRow] | None = None, collection: str | None = None) -> None:
        loop = asyncio.get_running_loop()
        futures: dict[CacheKey, asyncio.Future[_Computed]] = {key: loop.create_future() for key in to_compute}
        self._computing.update(futures)
        try:
            vectors, token_counts = await self._embed_spread(model, list(to_compute.values()))
        except BaseException as exc:
            for future in futures.values():
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
                    future.exception()  # mark retrieved: nobody else may be waiting
            raise
        finally:
            for key in futures:
                self._computing.pop(key, None)
        finished = time.time()
        rows: list[EmbeddingRow] = []
        for row_index, (key, text) in enumerate(to_compute.items()):
            vector, tokens = vectors[row_index], token_counts[row_index]
            results[key] = Embedded(vector, False, tokens)
            self._cache.put(key, CachedVector(vector, tokens))
            futures[key].set_result((vector, tokens))
            rows.append(EmbeddingRow(
                text=text, text_hash=key[1], model_name=model, embedding=vector.tobytes(),
                dimensions=int(vector.shape[0]), ip_address=client_ip, request_time=started,
                response_time=finished, total_time=finished - started, document_id=document_id,
                collection=collection or "",
            ))
        for listener in self.computed_listeners:
            listener(model, list(to_compute.values()), [key[1] for key in to_compute], vectors)
        if row_sink is not None:
            row_sink.extend(rows)
        else:
            self._writer.enqueue(rows)
