"""Texts in, vectors out: the cache first, then one worker request for the misses, then the writer.

Identical texts requested at the same time are computed once: the second caller awaits the first one's
future instead of sending the text to a worker again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from gateway.broker import Broker
from gateway.cache import CacheKey, VectorCache
from gateway.errors import BadRequest
from gateway.writer_link import WriterLink
from shared.schema import text_hash


@dataclass(frozen=True)
class Embedded:
    vector: np.ndarray
    cached: bool


@dataclass
class ServiceCounters:
    cache_hits: int = 0
    cache_misses: int = 0
    deduplicated: int = 0


class EmbeddingService:
    def __init__(self, broker: Broker, cache: VectorCache, writer: WriterLink, models: tuple[str, ...],
                 max_text_chars: int) -> None:
        self._broker = broker
        self._cache = cache
        self._writer = writer
        self.models = models
        self._max_text_chars = max_text_chars
        self._computing: dict[CacheKey, asyncio.Future[np.ndarray]] = {}
        self.counters = ServiceCounters()

    def check_model(self, model: str) -> str:
        if model not in self.models:
            raise BadRequest(f"unknown model {model!r}; available models: {', '.join(self.models)}")
        return model

    async def embed(self, model: str, texts: list[str], client_ip: str | None = None,
                    document_id: int | None = None) -> list[Embedded]:
        """One vector per text, in order. Raises GatewayError subclasses for the client."""
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
            await self._compute(model, to_compute, results, client_ip, document_id, started)
        for key, future in waiting.items():
            results[key] = Embedded(await future, False)
        return [results[key] for key in keys]

    async def _compute(self, model: str, to_compute: dict[CacheKey, str], results: dict[CacheKey, Embedded],
                       client_ip: str | None, document_id: int | None, started: float) -> None:
        loop = asyncio.get_running_loop()
        futures = {key: loop.create_future() for key in to_compute}
        self._computing.update(futures)
        try:
            result = await self._broker.embed(model, list(to_compute.values()))
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
        rows = []
        for row_index, (key, text) in enumerate(to_compute.items()):
            vector = result.vectors[row_index]
            results[key] = Embedded(vector, False)
            self._cache.put(key, vector)
            futures[key].set_result(vector)
            rows.append({
                "text": text, "text_hash": key[1], "model_name": model, "embedding": vector.tobytes(),
                "dimensions": int(vector.shape[0]), "ip_address": client_ip, "request_time": started,
                "response_time": finished, "total_time": finished - started, "document_id": document_id,
            })
        self._writer.enqueue(rows)
