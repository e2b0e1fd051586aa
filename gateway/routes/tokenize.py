"""POST /tokenize: texts as the model's own token ids, so a client can count and truncate before it embeds.

As llama-server and TEI have it. The tokenizer lives in the model's workers (the gateway loads no model), so the
broker sends them a TOKENIZE, queued, credited and retried as an EMBED is; a worker answers it between two
llama.cpp calls. Errors are in OpenAI's form, as on /v1/embeddings, which this endpoint serves.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.openai.errors import invalid_request, model_not_found, openai_errors
from gateway.openai.parsing import parse_body
from gateway.openai.schemas import OpenAIErrorResponse, TokenizeRequest, TokenizeResponse
from gateway.openapi import Endpoint
from gateway.state import services


@openai_errors
async def tokenize(request: Request) -> Response:
    """POST /tokenize: each text's token ids and count in the model's tokenizer, untruncated."""
    state = services(request)
    body = await parse_body(request, TokenizeRequest, "a string or a list of strings")
    if not state.embeddings.models.accepts(body.model):
        raise model_not_found(body.model, state.embeddings.models.served())
    texts = [body.input] if isinstance(body.input, str) else body.input
    settings = state.settings
    if not texts:
        raise invalid_request("input must not be empty: send a text or a list of texts", "input")
    if len(texts) > settings.max_batch_texts:
        raise invalid_request(f"{len(texts)} inputs in one request; MAX_BATCH_TEXTS is {settings.max_batch_texts}",
                              "input")
    for position, text in enumerate(texts):
        if len(text) > settings.max_text_chars:
            raise invalid_request(f"input[{position}] has {len(text)} characters; MAX_TEXT_CHARS is "
                                  f"{settings.max_text_chars}", "input")
    tokens = await state.broker.tokenize(body.model, texts, body.add_special_tokens)
    ready = state.broker.last_ready[body.model]  # a worker answered, so its READY is known
    return JSONResponse({
        "object": "list",
        "data": [{"index": index, "tokens": ids, "count": len(ids)} for index, ids in enumerate(tokens.token_ids)],
        "model": body.model,
        "max_tokens": ready.max_tokens,
    })


ENDPOINTS = [
    Endpoint("POST", "/tokenize", tokenize, "A text's token ids in the model's own tokenizer (to count or truncate)",
             "openai", request_model=TokenizeRequest, response_model=TokenizeResponse,
             errors=(400, 404, 413, 429, 502, 503, 504), error_model=OpenAIErrorResponse),
]
