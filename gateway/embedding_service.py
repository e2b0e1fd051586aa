"""Texts in, vectors out: the cache first, then one worker request for the misses, then the writer.

Identical texts requested at the same time are computed once: the second caller awaits the first one's
future instead of sending the text to a worker again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from gateway.broker import Broker
from gateway.cache import CacheKey, VectorCache
from gateway.errors import BadRequest
from gateway.token_counts import TokenCounts
from gateway.token_ids import check_token_ids, token_ids_key
from gateway.writer_link import WriterLink
from shared.protocol import EmbeddingRow
from shared.schema import text_hash


@dataclass(frozen=True)
class Embedded:
    vector: np.ndarray
    cached: bool
    tokens: int | None = None  # as the worker counted them; None for a stored vector whose count is unknown


_MIN_PART = 16

# Told of every vector computed (model, texts, text hashes, vectors), before it is returned: search uses it
# to find a string as soon as its embedding exists, before the writer has indexed it.
ComputedListener = Callable[[str, list[str], list[str], np.ndarray], None]


@dataclass
class ServiceCounters:
    cache_hits: int = 0
    cache_misses: int = 0
    deduplicated: int = 0


class EmbeddingService:
    def __init__(self, broker: Broker, cache: VectorCache, writer: WriterLink, models: tuple[str, ...],
                 max_text_chars: int, token_count_entries: int = 50_000) -> None:
        self._broker = broker
        self._cache = cache
        self._writer = writer
        self.models = models
        self._max_text_chars = max_text_chars
        self._computing: dict[CacheKey, asyncio.Future[np.ndarray]] = {}
        self.counters = ServiceCounters()
        self.token_counts = TokenCounts(token_count_entries)
        self.computed_listeners: list[ComputedListener] = []

    def check_model(self, model: str) -> str:
        if model not in self.models:
            raise BadRequest(f"unknown model {model!r}; available models: {', '.join(self.models)}")
        return model

    async def embed(self, model: str, texts: list[str], client_ip: str | None = None,
                    document_id: int | None = None, row_sink: list[EmbeddingRow] | None = None) -> list[Embedded]:
        """One vector per text, in order. Raises GatewayError subclasses for the client.

        Rows computed here go to the writer, or into `row_sink` when given: the caller then sends them itself
        (a document sends them with the document, in one transaction).
        """
        self.check_model(model)
        for position, text in enumerate(texts):
            if len(text) > self._max_text_chars:
                raise BadRequest(f"text {position} has {len(text)} characters; MAX_TEXT_CHARS is {self._max_text_chars}")
        started = time.time()
        keys = [(model, text_hash(text)) for text in texts]
        results: dict[CacheKey, Embedded] = {}
        for key in keys:
            vector = self._cache.get_memory(key)
            if vector is not None:
                results[key] = Embedded(vector, True)
        missing = list(dict.fromkeys(key for key in keys if key not in results))
        if missing:
            stored = await self._cache.get_stored(model, [key[1] for key in missing])
            for key in missing:
                if key[1] in stored:
                    results[key] = Embedded(stored[key[1]], True)
        waiting: dict[CacheKey, asyncio.Future[np.ndarray]] = {}
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
            await self._compute(model, to_compute, results, client_ip, document_id, started, row_sink)
        for key, future in waiting.items():
            results[key] = Embedded(await future, False)
        return [self._with_tokens(results[key], key) for key in keys]

    def _with_tokens(self, embedded: Embedded, key: CacheKey) -> Embedded:
        return embedded if embedded.tokens is not None else replace(embedded, tokens=self.token_counts.get(key))

    async def embed_token_ids(self, model: str, token_lists: list[list[int]]) -> list[Embedded]:
        """One vector per token-id list, in order (gateway/token_ids.py says what the ids are).

        Cached in the in-memory LRU only: the table holds texts (stored strings, search and documents read
        it as such), so a vector with no text is not written to it.
        """
        self.check_model(model)
        check_token_ids(model, token_lists, self._broker.last_ready.get(model))
        keys = [(model, token_ids_key(ids)) for ids in token_lists]
        results: dict[CacheKey, Embedded] = {}
        for key in keys:
            vector = self._cache.get_memory(key)
            if vector is not None:
                results[key] = Embedded(vector, True, self.token_counts.get(key))
        missing = {key: ids for key, ids in zip(keys, token_lists) if key not in results}
        self.counters.cache_hits += len(keys) - len(missing)
        self.counters.cache_misses += len(missing)
        if missing:
            result = await self._broker.embed(model, [], token_ids=list(missing.values()))
            for row, key in enumerate(missing):
                count = result.token_counts[row]
                self._cache.put(key, result.vectors[row])
                self.token_counts.put(key, count)
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
                       row_sink: list[EmbeddingRow] | None = None) -> None:
        loop = asyncio.get_running_loop()
        futures = {key: loop.create_future() for key in to_compute}
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
            vector = vectors[row_index]
            results[key] = Embedded(vector, False, token_counts[row_index])
            self.token_counts.put(key, token_counts[row_index])
            self._cache.put(key, vector)
            futures[key].set_result(vector)
            rows.append(EmbeddingRow(
                text=text, text_hash=key[1], model_name=model, embedding=vector.tobytes(),
                dimensions=int(vector.shape[0]), ip_address=client_ip, request_time=started,
                response_time=finished, total_time=finished - started, document_id=document_id,
            ))
        for listener in self.computed_listeners:
            listener(model, list(to_compute.values()), [key[1] for key in to_compute], vectors)
        if row_sink is not None:
            row_sink.extend(rows)
        else:
            self._writer.enqueue(rows)
