"""The original service's embedding endpoints, with its paths and field names."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import BadRequest
from gateway.openapi import EMBEDDING_ERRORS, Endpoint, QueryParam
from gateway.responses import VectorJSONResponse
from gateway.schemas import (
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    ModelNamesResponse,
    StoredStringsResponse,
)
from gateway.state import services
from gateway.validation import client_ip, parse_json_body, query_int


async def get_embedding_vector(request: Request) -> Response:
    """POST /get_embedding_vector/: the vector of one text, from the cache when it was computed before."""
    state = services(request)
    body = await parse_json_body(request, EmbeddingRequest)
    model = body.chosen_model(state.settings.default_model_name)
    client = client_ip(request)
    [embedded] = await state.embeddings.embed(model, [body.text], client_ip=client, collection=body.collection)
    return VectorJSONResponse({"embedding": embedded.vector, "model": model,
                         "dimensions": int(embedded.vector.shape[0]), "cached": embedded.cached})


async def get_embedding_vectors(request: Request) -> Response:
    """POST /get_embedding_vectors/: one vector per text, in input order; 422 past MAX_BATCH_TEXTS texts."""
    state = services(request)
    body = await parse_json_body(request, EmbeddingsRequest)
    model = body.chosen_model(state.settings.default_model_name)
    if len(body.texts) > state.settings.max_batch_texts:
        raise BadRequest(f"{len(body.texts)} texts in one request; MAX_BATCH_TEXTS is {state.settings.max_batch_texts}")
    client = client_ip(request)
    embedded = await state.embeddings.embed(model, body.texts, client_ip=client, collection=body.collection)
    dimensions = int(embedded[0].vector.shape[0]) if embedded else 0
    return VectorJSONResponse({"embeddings": [item.vector for item in embedded], "model": model,
                         "dimensions": dimensions, "cached": [item.cached for item in embedded]})


async def get_list_of_available_model_names(request: Request) -> Response:
    """GET /get_list_of_available_model_names/: the names of the models this gateway serves."""
    return JSONResponse({"model_names": list(services(request).embeddings.models.served())})


async def get_all_stored_strings(request: Request) -> Response:
    """GET /get_all_stored_strings/: a page of the distinct texts stored, of every model, in text order."""
    offset = query_int(request, "offset", 0) or 0
    limit = query_int(request, "limit", None, minimum=1)
    strings = await services(request).database.stored_strings(offset, limit)
    return JSONResponse({"strings": strings})


ENDPOINTS = [
    Endpoint("POST", "/get_embedding_vector/", get_embedding_vector,
             "Embedding vector of one text (from the cache when it was computed before)", "embeddings",
             request_model=EmbeddingRequest, response_model=EmbeddingResponse, errors=EMBEDDING_ERRORS),
    Endpoint("POST", "/get_embedding_vectors/", get_embedding_vectors,
             "Embedding vectors of several texts in one request, in input order", "embeddings",
             request_model=EmbeddingsRequest, response_model=EmbeddingsResponse, errors=EMBEDDING_ERRORS),
    Endpoint("GET", "/get_list_of_available_model_names/", get_list_of_available_model_names,
             "Names of the models that requests accept", "models", response_model=ModelNamesResponse, errors=()),
    Endpoint("GET", "/get_all_stored_strings/", get_all_stored_strings,
             "Every distinct text whose embedding is stored (paginate with offset and limit)", "embeddings",
             response_model=StoredStringsResponse,
             query=(QueryParam("offset", "integer", "Texts to skip (default 0)."),
                    QueryParam("limit", "integer", "At most this many texts (default: all)."))),
]
