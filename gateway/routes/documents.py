"""The original service's document endpoints: upload a text or PDF file, get every sentence's embedding."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from gateway.documents.packaging import ORIENTS, build_zip, parse_orient, read_blocks, safe_stem
from gateway.documents.upload import FILE_FIELD, read_upload
from gateway.openapi import Endpoint, QueryParam
from gateway.schemas import StoredDocumentsResponse
from gateway.state import services
from gateway.validation import client_ip, query_int

_CHOICES = ("model_name", "llm_model_name", "json_format")


async def get_all_embeddings_for_document(request: Request) -> Response:
    """POST /get_all_embeddings_for_document/: a zip of the embedding of every sentence of the uploaded file."""
    state = services(request)
    query = request.query_params
    # What the query says is checked before the upload is read, so a bad name costs the client nothing.
    if "json_format" in query:
        parse_orient(query["json_format"])
    if query.get("model_name") or query.get("llm_model_name"):
        state.embeddings.check_model(query.get("model_name") or query["llm_model_name"])
    settings = state.settings
    upload = await read_upload(request, int(settings.max_upload_size_mb * 1024 * 1024),
                               f"MAX_UPLOAD_SIZE_MB={settings.max_upload_size_mb:g}")
    chosen = {name: query.get(name) or upload.fields.get(name) for name in _CHOICES}
    model = state.embeddings.check_model(chosen["model_name"] or chosen["llm_model_name"] or settings.default_model_name)
    orient = parse_orient(chosen["json_format"])
    client = client_ip(request)
    document = await state.documents.embed(upload, model, client)
    stem = safe_stem(upload.filename)
    archive = await asyncio.to_thread(build_zip, stem, document.sentences, document.vectors, orient,
                                      {**document.metadata, "json_format": orient})
    return StreamingResponse(read_blocks(archive), media_type="application/zip",
                             headers={"Content-Disposition": f'attachment; filename="{stem}.zip"'})


async def get_all_stored_documents_with_embeddings(request: Request) -> Response:
    """GET /get_all_stored_documents_with_embeddings/: a page of the stored documents' distinct file names."""
    offset = query_int(request, "offset", 0) or 0
    limit = query_int(request, "limit", None, minimum=1)
    filenames = await services(request).database.document_filenames(offset, limit)
    return JSONResponse({"documents": filenames})


_FORM_FIELD = {"type": "string", "description": "Also accepted as a query parameter (the query wins)."}
UPLOAD_FORM = {
    "multipart/form-data": {
        "schema": {
            "type": "object",
            "required": [FILE_FIELD],
            "properties": {
                FILE_FIELD: {"type": "string", "format": "binary",
                             "description": "Plain text (UTF-8, UTF-16 with BOM, Latin-1) or a PDF with a text layer."},
                **{name: _FORM_FIELD for name in _CHOICES},
            },
        }
    }
}
ZIP_ANSWER = {
    "application/zip": {
        "schema": {"type": "string", "format": "binary",
                   "description": "<stem>.zip holding <stem>.json (DataFrame of columns text and embedding in the "
                                  "orient asked for) and <stem>.metadata.json (model, pooling, sentence count, "
                                  "file hash)."}
    }
}

ENDPOINTS = [
    Endpoint("POST", "/get_all_embeddings_for_document/", get_all_embeddings_for_document,
             "Embedding of every sentence of an uploaded text or PDF file, as a zip of JSON", "documents",
             query=(QueryParam("model_name", "string", "A name from /get_list_of_available_model_names/ "
                                                       "(default DEFAULT_MODEL_NAME; llm_model_name is accepted too)."),
                    QueryParam("llm_model_name", "string", "Accepted as a synonym of model_name."),
                    QueryParam("json_format", "string", f"A pandas to_json orient: {', '.join(ORIENTS)} "
                                                        "(default records).")),
             errors=(413, 415, 422, 429, 502, 503, 504), request_content=UPLOAD_FORM, response_content=ZIP_ANSWER),
    Endpoint("GET", "/get_all_stored_documents_with_embeddings/", get_all_stored_documents_with_embeddings,
             "File names of the stored documents (paginate with offset and limit)", "documents",
             response_model=StoredDocumentsResponse,
             query=(QueryParam("offset", "integer", "File names to skip (default 0)."),
                    QueryParam("limit", "integer", "At most this many file names (default: all)."))),
]
