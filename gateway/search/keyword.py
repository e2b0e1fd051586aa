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
# English function words. Each makes nearly every string a candidate to rank, for next to no BM25 weight:
# left out, a sentence-long query over 133k stored sentences took 35 ms instead of 132 (benchmarks/search.py).
# PostgreSQL's 'english' configuration drops the same kind of words itself.
STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both
but by can did do does doing down during each few for from further had has have having he her here hers herself
him himself his how i if in into is it its itself just me more most my myself no nor not now of off on once only
or other our ours ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were what when where
which while who whom why will with you your yours yourself yourselves
""".split())


def query_words(query: str) -> list[str]:
    """The distinct words of `query`, lower-cased, in order, at most _MAX_WORDS, without STOPWORDS unless the
    query has no other words."""
    words = list(dict.fromkeys(word.lower() for word in _WORD.findall(query)))
    content = [word for word in words if word not in STOPWORDS]
    return (content or words)[:_MAX_WORDS]


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
