"""Reading the JSON body of an OpenAI-style route, its complaints in OpenAI's form naming the field at fault."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, RootModel, ValidationError
from starlette.requests import Request

from gateway.openai.errors import invalid_request
from gateway.validation import parse_json_body

Body = TypeVar("Body", bound=BaseModel)


class _JsonObject(RootModel[dict[str, Any]]):
    """Any JSON object: the body is then checked field by field, to name the offending `param`."""


async def parse_body(request: Request, model: type[Body], input_forms: str) -> Body:
    """The body as `model`; a 400 invalid_request_error naming the field otherwise. `input_forms` says what
    `input` may be: pydantic lists one complaint per alternative of its union, said here once."""
    raw = await parse_json_body(request, _JsonObject)
    try:
        return model.model_validate(raw.root)
    except ValidationError as exc:
        error = exc.errors()[0]
        param = str(error["loc"][0]) if error["loc"] else None
        if param == "input":
            raise invalid_request(f"input must be {input_forms}", param) from None
        location = ".".join(str(part) for part in error["loc"]) or "body"
        raise invalid_request(f"{location}: {error['msg']}", param) from None
