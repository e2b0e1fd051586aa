"""POST /get_most_similar_string_from_database/ behind the route: semantic, keyword or hybrid search.

Semantic embeds the query (through EmbeddingService, so it is cached and stored as before) and asks the FAISS
indexes; keyword needs no embedding at all; hybrid runs both at once and fuses them (fusion.py). Each part of a
hybrid search looks at more candidates than asked for, since a string can rank low in one part and high in the
other.
"""

from __future__ import annotations

import asyncio

from gateway.database import ReadOnlyDatabase
from gateway.embedding_service import EmbeddingService
from gateway.search.fusion import Ranked, fuse
from gateway.search.indexes import SearchIndexes
from gateway.search.keyword import query_words
from gateway.search.scope import Scope

SEMANTIC, KEYWORD, HYBRID = "semantic", "keyword", "hybrid"
MODES = (SEMANTIC, KEYWORD, HYBRID)
HYBRID_CANDIDATES = 50  # per part, at least; RRF over the top 50 of each is the usual practice


class Searcher:
    """Answers a search in any mode over one model's stored strings, optionally within a scope."""

    def __init__(self, embeddings: EmbeddingService, indexes: SearchIndexes, database: ReadOnlyDatabase) -> None:
        self._embeddings = embeddings
        self._indexes = indexes
        self._database = database

    async def search(self, model: str, query: str, k: int, mode: str, scope: Scope,
                     client_ip: str | None) -> list[Ranked]:
        """The `k` best stored strings for `query`, best first; the query text itself is left out."""
        if mode == SEMANTIC:
            return [Ranked(text, score, similarity=score, semantic_rank=rank)
                    for rank, (text, score) in enumerate(await self._semantic(model, query, k, scope, client_ip), 1)]
        if mode == KEYWORD:
            return [Ranked(text, score, keyword_rank=rank)
                    for rank, (text, score) in enumerate(await self._keyword(model, query, k, scope), 1)]
        candidates = max(HYBRID_CANDIDATES, 2 * k)
        semantic, keyword = await asyncio.gather(self._semantic(model, query, candidates, scope, client_ip),
                                                 self._keyword(model, query, candidates, scope))
        return fuse(semantic, keyword, k)

    async def _semantic(self, model: str, query: str, k: int, scope: Scope,
                        client_ip: str | None) -> list[tuple[str, float]]:
        [embedded] = await self._embeddings.embed(model, [query], client_ip=client_ip)
        hits = await self._indexes.search(model, embedded.vector, k, query, scope)
        return [(hit.text, hit.similarity) for hit in hits]

    async def _keyword(self, model: str, query: str, k: int, scope: Scope) -> list[tuple[str, float]]:
        words = query_words(query)
        if not words:
            return []
        # One more than asked for, as semantic search: the query text itself may be stored, and is left out.
        matches = await asyncio.to_thread(self._database.keyword_matches, model, words, k + 1, scope)
        return [(text, score) for text, score in matches if text != query][:k]
