"""The original service's similarity endpoints: two strings compared, and the stored strings nearest a query.

Texts are embedded through EmbeddingService like any other request, so they are cached and stored (and
so become searchable themselves); a search leaves the query text out of its own results. Search's modes and
scopes are gateway/search/searcher.py's.
"""

from __future__ import annotations

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.openapi import EMBEDDING_ERRORS, Endpoint
from gateway.responses import VectorJSONResponse
from gateway.search.fusion import Ranked
from gateway.search.schemas import (
    SemanticSearchRequest,
    SemanticSearchResponse,
    SimilarityRequest,
    SimilarityResponse,
)
from gateway.search.scope import Scope
from gateway.search.searcher import KEYWORD, SEMANTIC
from gateway.state import services
from gateway.validation import client_ip, parse_json_body


def cosine_similarity(first: np.ndarray, second: np.ndarray) -> float:
    """Cosine in float64 (the vectors are normalised already; dividing by the norms costs nothing)."""
    a, b = first.astype(np.float64), second.astype(np.float64)
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


async def compute_similarity_between_strings(request: Request) -> Response:
    """POST /compute_similarity_between_strings/: both texts' embeddings and their cosine similarity."""
    state = services(request)
    body = await parse_json_body(request, SimilarityRequest)
    model = body.chosen_model(state.settings.default_model_name)
    client = client_ip(request)
    first, second = await state.embeddings.embed(model, [body.text1, body.text2], client_ip=client)
    return VectorJSONResponse({"text1": body.text1, "text2": body.text2, "similarity_measure": "cosine_similarity",
                               "similarity": cosine_similarity(first.vector, second.vector),
                               "embedding1": first.vector, "embedding2": second.vector, "model": model})


async def get_most_similar_string_from_database(request: Request) -> Response:
    """POST /get_most_similar_string_from_database/: the stored strings best matching the text, best first."""
    state = services(request)
    body = await parse_json_body(request, SemanticSearchRequest)
    model = state.embeddings.check_model(body.chosen_model(state.settings.default_model_name))
    results = await state.searcher.search(model, body.text, body.number_of_most_similar_strings_to_return, body.mode,
                                          Scope(body.collection, body.document), client_ip(request))
    return JSONResponse({"query_text": body.text, "model": model, "mode": body.mode,
                         "results": [_result(body.mode, result) for result in results]})


def _result(mode: str, result: Ranked) -> dict[str, object]:
    """A result in the fields of its mode (semantic answers keep the original service's two fields)."""
    if mode == SEMANTIC:
        return {"text": result.text, "similarity": result.similarity}
    if mode == KEYWORD:
        return {"text": result.text, "score": result.score, "keyword_rank": result.keyword_rank}
    return {"text": result.text, "score": result.score, "similarity": result.similarity,
            "semantic_rank": result.semantic_rank, "keyword_rank": result.keyword_rank}


ENDPOINTS = [
    Endpoint("POST", "/compute_similarity_between_strings/", compute_similarity_between_strings,
             "Cosine similarity of two texts' embeddings (each from the cache or computed and cached)", "similarity",
             request_model=SimilarityRequest, response_model=SimilarityResponse, errors=EMBEDDING_ERRORS),
    Endpoint("POST", "/get_most_similar_string_from_database/", get_most_similar_string_from_database,
             "The stored strings best matching a text, best first (the text itself left out): semantic, keyword or hybrid, "
             "optionally within a collection or document", "similarity",
             request_model=SemanticSearchRequest, response_model=SemanticSearchResponse,
             errors=EMBEDDING_ERRORS),
]
