"""The OpenAI-compatible API: POST /v1/embeddings and GET /v1/models, with OpenAI-style errors.

Texts share the cache, de-duplication and batching of the original endpoints (EmbeddingService.embed), so a
text embedded through either is cached for both. Token-id inputs go to EmbeddingService.embed_token_ids.
OpenAI's clients send an API key as a bearer token: with USE_SECURITY_TOKEN on it must be the security token
(gateway/auth.py guards these routes like every other); with it off, any key is accepted.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import BadRequest
from gateway.openai.errors import OpenAIError, invalid_request, model_not_found, openai_errors, translate
from gateway.openai.parsing import parse_body
from gateway.openai.schemas import (
    OpenAIEmbeddingRequest,
    OpenAIEmbeddingResponse,
    OpenAIErrorResponse,
    OpenAIModelList,
)
from gateway.openapi import Endpoint
from gateway.state import Services, services
from gateway.token_ids import REFUSED as TOKEN_IDS_REFUSED
from gateway.validation import client_ip

OWNER = "llama-embeddings-service"
INPUT_FORMS = "a string, a list of strings, a list of token ids or a list of token-id lists"


@openai_errors
async def create_embeddings(request: Request) -> Response:
    """POST /v1/embeddings: vectors of texts or token ids in OpenAI's form, optionally shortened or in base64."""
    state = services(request)
    body = await parse_body(request, OpenAIEmbeddingRequest, INPUT_FORMS)
    model = _served_model(state, body.model)
    texts, token_lists = _split_input(body.input, state.settings.max_batch_texts)
    if token_lists and not state.settings.accept_token_ids:
        raise invalid_request(TOKEN_IDS_REFUSED, "input", "token_ids_not_accepted")
    if token_lists and body.collection:
        raise invalid_request("collection applies to text inputs only: token ids are not stored", "collection")
    _check_dimensions(body.dimensions, _known_dimensions(state, model), model)
    try:
        if texts:
            client = client_ip(request)
            embedded = await state.embeddings.embed(model, texts, client_ip=client, collection=body.collection)
        else:
            embedded = await state.embeddings.embed_token_ids(model, token_lists)
    except BadRequest as exc:  # the model is checked already, so what is wrong is the input
        raise translate(exc, param="input") from None
    vectors = [item.vector for item in embedded]
    if body.dimensions is not None and vectors:
        _check_dimensions(body.dimensions, int(vectors[0].shape[0]), model)
        vectors = [_shorten(vector, body.dimensions) for vector in vectors]
    encode = _base64 if body.encoding_format == "base64" else _floats
    tokens = sum(item.tokens or 0 for item in embedded)
    return JSONResponse({
        "object": "list",
        "data": [{"object": "embedding", "index": index, "embedding": encode(vector)}
                 for index, vector in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })


@openai_errors
async def list_models(request: Request) -> Response:
    """GET /v1/models: the served models in OpenAI's list form."""
    models = services(request).embeddings.models.served()
    return JSONResponse({"object": "list",
                         "data": [{"id": name, "object": "model", "created": 0, "owned_by": OWNER} for name in models]})


def _served_model(state: Services, model: str) -> str:
    if not state.embeddings.models.accepts(model):
        raise model_not_found(model, state.embeddings.models.served())
    return model


def _split_input(value: str | list[Any], most: int) -> tuple[list[str], list[list[int]]]:
    """OpenAI's four input forms as (texts, token-id lists), exactly one of them non-empty."""
    if isinstance(value, str):
        return [value], []
    if not value:
        raise invalid_request(f"input must not be empty: send {INPUT_FORMS}", "input")
    if len(value) > most:
        raise invalid_request(f"{len(value)} inputs in one request; MAX_BATCH_TEXTS is {most}", "input")
    if isinstance(value[0], str):
        return list(value), []
    if isinstance(value[0], int):
        return [], [list(value)]
    return [], [list(ids) for ids in value]


def _known_dimensions(state: Services, model: str) -> int | None:
    ready = state.broker.last_ready.get(model)
    return ready.dimensions if ready else None


def _check_dimensions(wanted: int | None, available: int | None, model: str) -> None:
    if wanted is not None and available is not None and wanted > available:
        raise OpenAIError(400, f"dimensions is {wanted} but model {model!r} has {available}",
                          "invalid_request_error", "dimensions")


def _shorten(vector: np.ndarray, dimensions: int) -> np.ndarray:
    """The first `dimensions` components, L2-normalised again (the cached full vector is left as it is)."""
    short = np.array(vector[:dimensions], dtype=np.float32)
    norm = np.linalg.norm(short)
    return short / norm if norm > 0 else short


def _floats(vector: np.ndarray) -> list[float]:
    return vector.tolist()


def _base64(vector: np.ndarray) -> str:
    # As OpenAI: the little-endian float32 bytes, so np.frombuffer(b64decode(s), "<f4") gives the vector back.
    return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")


ENDPOINTS = [
    Endpoint("POST", "/v1/embeddings", create_embeddings,
             "OpenAI-compatible embeddings (texts or token ids; float or base64; optional dimensions)", "openai",
             request_model=OpenAIEmbeddingRequest, response_model=OpenAIEmbeddingResponse,
             errors=(400, 404, 413, 429, 502, 503, 504), error_model=OpenAIErrorResponse),
    Endpoint("GET", "/v1/models", list_models, "The served models, in OpenAI's list form", "openai",
             response_model=OpenAIModelList, errors=(), error_model=OpenAIErrorResponse),
]
