"""Errors of the OpenAI-compatible routes in OpenAI's form: `{"error": {"message", "type", "param", "code"}}`.

Only these routes answer this way; the original endpoints keep `{"detail": ...}` for their clients. The
service's own failures (GatewayError) are translated here, with OpenAI's status codes (400 for bad input
where the original endpoints say 422).
"""

from __future__ import annotations

import functools
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import GatewayError
from gateway.openapi import Handler

log = logging.getLogger(__name__)

# status of a GatewayError → (status, type, code) as OpenAI answers them
_TRANSLATION: dict[int, tuple[int, str, str | None]] = {
    422: (400, "invalid_request_error", None),
    413: (413, "invalid_request_error", "request_too_large"),
    429: (429, "requests", "rate_limit_exceeded"),  # OpenAI's rate-limit answers use type "requests"
    502: (502, "server_error", "worker_failed"),
    503: (503, "server_error", "service_unavailable"),
    504: (504, "server_error", "timeout"),
}


class OpenAIError(Exception):
    """A failure of an OpenAI-compatible route, answered with its status in OpenAI's `{"error": ...}` form."""

    def __init__(self, status_code: int, message: str, type_: str, param: str | None = None, code: str | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status_code, self.message, self.type, self.param, self.code = status_code, message, type_, param, code
        self.retry_after = retry_after

    def response(self) -> JSONResponse:
        """The error as OpenAI's JSON body, with Retry-After when a wait is advised."""
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after else None
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status_code, headers=headers)


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    """400 invalid_request_error, OpenAI's answer to bad input; `param` names the field at fault."""
    return OpenAIError(400, message, "invalid_request_error", param, code)


def model_not_found(model: str, available: tuple[str, ...]) -> OpenAIError:
    """404 model_not_found for a model this gateway does not serve, naming the ones it does."""
    return OpenAIError(404, f"The model {model!r} does not exist; available models: {', '.join(available)}",
                       "invalid_request_error", "model", "model_not_found")


def translate(error: GatewayError, param: str | None = None) -> OpenAIError:
    """A GatewayError in OpenAI's form, its status as OpenAI would answer (422 becomes 400); `param` only on a 400."""
    status, type_, code = _TRANSLATION.get(error.status_code, (error.status_code, "server_error", None))
    return OpenAIError(status, error.detail, type_, param if status == 400 else None, code, error.retry_after)


def openai_errors(handler: Handler) -> Handler:
    """Answer every failure of `handler` in OpenAI's form instead of the app-wide `{"detail": ...}`."""

    @functools.wraps(handler)
    async def answer_in_openai_form(request: Request) -> Response:
        try:
            return await handler(request)
        except OpenAIError as exc:
            return exc.response()
        except GatewayError as exc:
            return translate(exc).response()
        except Exception:  # the traceback goes to the log, never to the client
            log.exception("unexpected error on %s %s", request.method, request.url.path)
            return OpenAIError(500, "internal server error; see the gateway log", "server_error").response()

    return answer_in_openai_form
