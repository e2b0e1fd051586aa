"""The OpenAPI document, built from the endpoints' declared models, and the offline Swagger UI page.

Starlette has no schema generator of its own that knows pydantic models, so each route module declares
its endpoints as `Endpoint`s and this module turns them into both Starlette routes and the document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from gateway.schemas import ErrorResponse

Handler = Callable[[Request], Awaitable[Response]]
_PATH_PARAMETER = re.compile(r"{(\w+)}")
ASSETS_PATH = "/swagger-assets"
# What an endpoint that computes embeddings can answer besides 200: body too large, bad input, queue full,
# llama.cpp failed on the request's texts, no live worker, deadline passed.
EMBEDDING_ERRORS = (413, 422, 429, 502, 503, 504)


@dataclass(frozen=True)
class QueryParam:
    """A query parameter of an endpoint, as the OpenAPI document describes it."""

    name: str
    type: str  # an OpenAPI type: "string", "integer"
    description: str
    required: bool = False


@dataclass(frozen=True)
class Endpoint:
    """One HTTP endpoint: its method, path and handler, and what the OpenAPI document says of it."""

    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    request_model: type[BaseModel] | None = None
    response_model: type[BaseModel] | None = None
    query: tuple[QueryParam, ...] = ()
    errors: tuple[int, ...] = (422,)
    request_content: dict[str, Any] = field(default_factory=dict)  # for non-JSON bodies (uploads)
    response_content: dict[str, Any] = field(default_factory=dict)
    error_model: type[BaseModel] = ErrorResponse  # the OpenAI-compatible routes answer errors in OpenAI's form
    success_status: int = 200  # 202 for an endpoint that accepts work to be done later

    def route(self) -> Route:
        """The Starlette route that serves this endpoint."""
        return Route(self.path, self.handler, methods=[self.method])


def build_document(endpoints: list[Endpoint], title: str, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `endpoints`, the schemas of their pydantic models gathered as components."""
    schemas: dict[str, Any] = {}

    def ref(model: type[BaseModel]) -> dict[str, str]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        operation: dict[str, Any] = {
            "summary": endpoint.summary,
            "tags": [endpoint.tag],
            "operationId": endpoint.handler.__name__,
            "responses": {},
        }
        parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                      for name in _PATH_PARAMETER.findall(endpoint.path)]
        parameters += [{"name": q.name, "in": "query", "required": q.required, "description": q.description,
                        "schema": {"type": q.type}} for q in endpoint.query]
        if parameters:
            operation["parameters"] = parameters
        if endpoint.request_model is not None:
            operation["requestBody"] = {"required": True,
                                        "content": {"application/json": {"schema": ref(endpoint.request_model)}}}
        elif endpoint.request_content:
            operation["requestBody"] = {"required": True, "content": endpoint.request_content}
        if endpoint.response_model is not None:
            content = {"application/json": {"schema": ref(endpoint.response_model)}}
        else:
            content = endpoint.response_content
        operation["responses"][str(endpoint.success_status)] = {"description": "Success", "content": content}
        for status in endpoint.errors:
            operation["responses"][str(status)] = {
                "description": "Error", "content": {"application/json": {"schema": ref(endpoint.error_model)}}}
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def docs_endpoints(document: dict[str, Any]) -> list[Route]:
    """The routes of /openapi.json (serving `document`) and of the Swagger UI page at /, left out of the schema."""
    async def openapi_json(_request: Request) -> Response:
        return JSONResponse(document)

    async def swagger_ui(_request: Request) -> Response:
        return HTMLResponse(_SWAGGER_PAGE)

    return [Route("/openapi.json", openapi_json, include_in_schema=False),
            Route("/", swagger_ui, include_in_schema=False)]


_SWAGGER_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Llama Embeddings Service</title>
  <link rel="stylesheet" href="{ASSETS_PATH}/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{ASSETS_PATH}/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true}});
  </script>
</body>
</html>
"""
