"""Deleting from the store: a stored string, a document, or a collection (token-protected like every endpoint).

The writer deletes (the only process that writes) and answers after its commit; this gateway then drops the
rows from its cache and search tails at once, every other gateway within SEARCH_INDEX_POLL_MS (its deletion
feed), and the writer's indexer removes the ids from the FAISS index, saved within
SEARCH_INDEX_SAVE_INTERVAL_MS. Meanwhile search leaves out rows it cannot find in the store any more.
"""

from __future__ import annotations

import re

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import BadRequest, NotFound
from gateway.openapi import Endpoint
from gateway.schemas import CollectionName, DeletedResponse, DeleteStringRequest
from gateway.state import Services, services
from gateway.validation import parse_json_body, validate
from shared.schema import COLLECTION, DOCUMENT, text_hash

_FILE_HASH = re.compile(r"^[0-9a-f]{64}$")
_ERRORS = (404, 413, 422, 503)


async def delete_stored_string(request: Request) -> Response:
    """DELETE /stored_strings/: a text's stored vectors (of one model, or of every model), wherever they are."""
    body = await parse_json_body(request, DeleteStringRequest)
    what = f"the text {body.text[:80]!r}" + (f" of model {body.model_name!r}" if body.model_name else "")
    return await _delete(services(request), "string", text_hash(body.text), what, body.model_name or "")


async def delete_stored_document(request: Request) -> Response:
    """DELETE /stored_documents/{file_hash}: a stored document (of every model) and the sentences only it holds."""
    file_hash = request.path_params["file_hash"]
    if not _FILE_HASH.match(file_hash):
        raise BadRequest(f"file_hash must be a document's SHA3-256 as 64 lower-case hex digits, got {file_hash[:80]!r}")
    return await _delete(services(request), DOCUMENT, file_hash, f"a document with file hash {file_hash}")


async def delete_collection(request: Request) -> Response:
    """DELETE /collections/{name}: a collection, and the texts it leaves in no other collection or document."""
    name = validate(_CollectionPath, {"name": request.path_params["name"]}).name
    return await _delete(services(request), COLLECTION, name, f"a collection named {name!r}")


async def _delete(state: Services, target: str, name: str, what: str, model: str = "") -> Response:
    reply = await state.writer.delete(target, name, model)
    if not reply.found:
        raise NotFound(f"there is no {what} in the store")
    state.deletions.apply(reply.rows)
    models = sorted({row.model_name for row in reply.rows})
    return JSONResponse({"deleted_rows": len(reply.rows), "models": models})


class _CollectionPath(BaseModel):
    """A collection name in a path, checked as in request bodies."""

    name: CollectionName


ENDPOINTS = [
    Endpoint("DELETE", "/stored_strings/", delete_stored_string,
             "Delete a stored text's vectors (one model's or every model's): from the store, search and the caches",
             "deletion", request_model=DeleteStringRequest, response_model=DeletedResponse, errors=_ERRORS),
    Endpoint("DELETE", "/stored_documents/{file_hash}", delete_stored_document,
             "Delete a stored document and the sentences no other collection or document holds", "deletion",
             response_model=DeletedResponse, errors=_ERRORS),
    Endpoint("DELETE", "/collections/{name}", delete_collection,
             "Delete a collection and the texts no other collection or document holds", "deletion",
             response_model=DeletedResponse, errors=_ERRORS),
]
