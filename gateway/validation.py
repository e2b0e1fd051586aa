"""Reading requests: bodies into pydantic models (a 4xx that names the problem on any bad input), query integers,
the client's address."""

from __future__ import annotations

from typing import TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from gateway.errors import BadRequest, PayloadTooLarge

M = TypeVar("M", bound=BaseModel)
async def parse_json_body(request: Request, model: type[M]) -> M:
    """The JSON body as `model`: 413 past MAX_REQUEST_BODY_MB, 422 for bad UTF-8, bad JSON or invalid fields."""
    max_bytes = request.app.state.services.settings.max_request_body_bytes
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise PayloadTooLarge(f"request body is larger than MAX_REQUEST_BODY_MB ({max_bytes} bytes)")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        problem = "UTF-8" if "utf-8" in str(exc).lower() else "JSON"
        raise BadRequest(f"request body is not valid {problem}: {exc}") from None
    return validate(model, data)


def validate(model: type[M], data: object) -> M:
    """`data` as `model`, or BadRequest naming each invalid field as `location: message`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}" for error in exc.errors()
        )
        raise BadRequest(problems) from None


SQLITE_MAX_INTEGER = 2**63 - 1


def query_int(request: Request, name: str, default: int | None, minimum: int = 0,
              maximum: int = SQLITE_MAX_INTEGER) -> int | None:
    """The integer query parameter `name`, `default` when absent or empty; BadRequest unless an integer in range."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name!r} must be an integer, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise BadRequest(f"query parameter {name!r} must be between {minimum} and {maximum}, got {value}")
    return value


def client_ip(request: Request) -> str | None:
    """The client's address, stored with each row it caused (as the original service did)."""
    return request.client.host if request.client else None
