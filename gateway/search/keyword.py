"""Keyword search over the stored strings: BM25 through SQLite FTS5, or PostgreSQL's full-text search.

The query text is reduced to its words, each quoted, joined by OR: the user's punctuation can never be read
as FTS syntax (a stray quote or `NEAR` is a word like any other), and a string that holds any of the words
is a candidate, ranked by BM25 (SQLite) or `ts_rank_cd` (PostgreSQL), so rare words weigh most. The index
itself is kept by the writer (shared/schema.py, `create_schema`).
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import ColumnClause, Select, func, literal_column, select, table, text

from shared.schema import POSTGRESQL_TEXT_SEARCH_CONFIG, embeddings

_WORD = re.compile(r"\w+")
_MAX_WORDS = 64  # a query is a few words; a pasted page would only make every string a candidate


def query_words(query: str) -> list[str]:
    """The distinct words of `query`, lower-cased, in order, at most _MAX_WORDS."""
    return list(dict.fromkeys(word.lower() for word in _WORD.findall(query)))[:_MAX_WORDS]


def keyword_query(dialect: str, words: list[str], model: str, limit: int) -> Select[Any]:
    """(text, score) of the `limit` best matches of `words` among `model`'s strings, best first; the caller
    adds scope conditions."""
    if dialect == "postgresql":
        config: ColumnClause[Any] = literal_column(f"'{POSTGRESQL_TEXT_SEARCH_CONFIG}'")  # inlined: the GIN index is on this form
        document = func.to_tsvector(config, embeddings.c.text)
        wanted = func.to_tsquery(config, " | ".join(words))
        score = func.ts_rank_cd(document, wanted)
        return (select(embeddings.c.text, score.label("score"))
                .where(document.op("@@")(wanted), embeddings.c.model_name == model)
                .order_by(score.desc()).limit(limit))
    fts = table("embeddings_fts", literal_column("rowid"))
    bm25: ColumnClause[Any] = literal_column("bm25(embeddings_fts)")  # lower is better
    match = " OR ".join(f'"{word}"' for word in words)
    return (select(embeddings.c.text, (-bm25).label("score"))
            .select_from(fts.join(embeddings, embeddings.c.id == literal_column("embeddings_fts.rowid")))
            .where(text("embeddings_fts MATCH :match").bindparams(match=match), embeddings.c.model_name == model)
            .order_by(bm25).limit(limit))
