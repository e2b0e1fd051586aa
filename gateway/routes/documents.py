"""The original service's document endpoints: upload a text or PDF file, get every sentence's embedding."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from gateway.documents.packaging import build_zip, read_blocks, safe_stem
from gateway.documents.parameters import (
    FORM_FIELDS,
    MODEL_SYNONYM,
    DocumentParameters,
    check_query,
    read_parameters,
)
from gateway.documents.upload import FILE_FIELD, Upload, read_upload
from gateway.openapi import Endpoint, QueryParam
from gateway.schemas import StoredDocumentsResponse
from gateway.state import services
from gateway.validation import client_ip, query_int


async def read_document_request(request: Request) -> tuple[Upload, DocumentParameters]:
    """The uploaded file and the upload's choices, checked: 422 for a bad model or orient, 413 past
    MAX_UPLOAD_SIZE_MB (as soon as the size is known)."""
    state = services(request)
    check_query(request.query_params, state.embeddings)
    settings = state.settings
    upload = await read_upload(request, int(settings.max_upload_size_mb * 1024 * 1024),
                               f"MAX_UPLOAD_SIZE_MB={settings.max_upload_size_mb:g}")
    return upload, read_parameters(request.query_params, upload.fields, state.embeddings, settings.default_model_name)


async def get_all_embeddings_for_document(request: Request) -> Response:
    """POST /get_all_embeddings_for_document/: a zip of the embedding of every sentence of the uploaded file."""
    upload, parameters = await read_document_request(request)
    orient = parameters.json_format
    document = await services(request).documents.embed(upload, parameters.model_name, client_ip(request),
                                                        collection=parameters.collection)
    stem = safe_stem(upload.filename)
    archive = await asyncio.to_thread(build_zip, stem, document.sentences, document.vectors, orient,
                                      document.archive_metadata(orient))
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
                **{name: _FORM_FIELD for name in FORM_FIELDS},
            },
        }
    }
}
UPLOAD_QUERY = (*(QueryParam(name, "string", field.description or "") for name, field in DocumentParameters.model_fields.items()),
                QueryParam(MODEL_SYNONYM, "string", "Accepted as a synonym of model_name."))
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
             query=UPLOAD_QUERY, errors=(413, 415, 422, 429, 502, 503, 504), request_content=UPLOAD_FORM,
             response_content=ZIP_ANSWER),
    Endpoint("GET", "/get_all_stored_documents_with_embeddings/", get_all_stored_documents_with_embeddings,
             "File names of the stored documents (paginate with offset and limit)", "documents",
             response_model=StoredDocumentsResponse,
             query=(QueryParam("offset", "integer", "File names to skip (default 0)."),
                    QueryParam("limit", "integer", "At most this many file names (default: all)."))),
]
