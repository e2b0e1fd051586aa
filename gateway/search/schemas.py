"""Request and response bodies of the similarity and semantic-search endpoints (the original service's fields)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from gateway.schemas import CollectionName, ModelChoice

DEFAULT_RESULTS = 10


class SimilarityRequest(ModelChoice):
    """The body of POST /compute_similarity_between_strings/: two texts to embed with one model and compare."""

    text1: str = Field(..., description="The first text.", examples=["A cat sits on the mat."])
    text2: str = Field(..., description="The second text.", examples=["A kitten rests on a rug."])


class SimilarityResponse(BaseModel):
    """The answer of POST /compute_similarity_between_strings/: both embeddings and their cosine similarity."""

    text1: str
    text2: str
    similarity_measure: str = Field("cosine_similarity", description="Always cosine similarity.")
    similarity: float = Field(..., description="Cosine similarity of the two embeddings, from -1 to 1.")
    embedding1: list[float] = Field(..., description="L2-normalised embedding of text1.")
    embedding2: list[float] = Field(..., description="L2-normalised embedding of text2.")
    model: str


class SemanticSearchRequest(ModelChoice):
    """The body of POST /get_most_similar_string_from_database/: a query text and how many strings to return."""

    text: str = Field(..., min_length=1, description="The query text (embedded and cached like any other).",
                      examples=["How do I reset my password?"])
    number_of_most_similar_strings_to_return: int = Field(
        DEFAULT_RESULTS, gt=0, description="How many stored strings to return at most (all of them if fewer).")
    collection: CollectionName | None = Field(
        None, description="Search only the strings of this collection (and of `document`, when both are given).")
    document: str | None = Field(None, pattern="^[0-9a-f]{64}$", description=(
        "Search only the sentences of this stored document: its SHA3-256 file hash (`file_hash` in a document "
        "answer's metadata)."))
    mode: Literal["semantic", "keyword", "hybrid"] = Field("semantic", description=(
        "semantic: nearest embeddings (the query is embedded). keyword: BM25 over the words (no embedding). "
        "hybrid: both, fused by reciprocal rank fusion."))


class SimilarString(BaseModel):
    """One result of a search: a stored string and how well it matches the query."""

    text: str
    similarity: float | None = Field(None, description=(
        "Cosine similarity to the query text; null for a keyword-only match of a hybrid search; absent in "
        "keyword mode."))
    score: float | None = Field(None, description=(
        "keyword and hybrid modes: BM25 (keyword) or the fused reciprocal-rank score (hybrid); higher is better."))
    semantic_rank: int | None = Field(None, description="hybrid: the string's rank in the semantic part (1 = best).")
    keyword_rank: int | None = Field(None, description="keyword and hybrid: its rank by keywords (1 = best).")


class SemanticSearchResponse(BaseModel):
    """The answer of POST /get_most_similar_string_from_database/: the stored strings nearest the query."""

    query_text: str
    model: str
    mode: str = "semantic"
    results: list[SimilarString] = Field(..., description="Best first; the query text itself is left out.")
