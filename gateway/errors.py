"""Failures that reach HTTP clients, and the one place that maps them to status codes and JSON bodies."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

log = logging.getLogger(__name__)


class GatewayError(Exception):
    """An error with an HTTP status; `detail` is shown to the client as `{"detail": ...}`."""

    status_code = 500
    retry_after: int | None = None

    def __init__(self, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if retry_after is not None:
            self.retry_after = retry_after


class BadRequest(GatewayError):
    """422: a body, query parameter, input or upload is not valid, or names a model that is not served."""

    status_code = 422


class Forbidden(GatewayError):
    """403: the admin API asked from another host while USE_SECURITY_TOKEN is off."""

    status_code = 403


class NotFound(GatewayError):
    """404: the admin API named a model that is not installed."""

    status_code = 404


class Conflict(GatewayError):
    """409: the supervisor refused an admin action as things stand (memory admission, the thread allotment)."""

    status_code = 409


class PayloadTooLarge(GatewayError):
    """413: the request body passes MAX_REQUEST_BODY_MB, or the uploaded file MAX_UPLOAD_SIZE_MB."""

    status_code = 413


class UnsupportedMediaType(GatewayError):
    """415: the uploaded file is neither plain text nor a PDF, as libmagic reads its content."""

    status_code = 415


class Overloaded(GatewayError):
    """429: the model's queue already holds MAX_QUEUE_PER_MODEL requests; the client may retry after a second."""

    status_code = 429
    retry_after = 1


class Unavailable(GatewayError):
    """503: no worker can answer for the model, its search index is not ready, or the supervisor did not answer."""

    status_code = 503
    retry_after = 2


class GatewayTimeout(GatewayError):
    """504: no result within REQUEST_TIMEOUT_SECONDS, or the workers did not leave the RAM disk in time."""

    status_code = 504


class WorkerFailed(GatewayError):
    """502: the worker could not embed the request's inputs (its tokenizer or llama.cpp failed on them)."""

    status_code = 502


def error_response(status_code: int, detail: object, retry_after: int | None = None) -> JSONResponse:
    """The `{"detail": ...}` answer every error of the original endpoints gets, with Retry-After when given."""
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)


async def gateway_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    """A GatewayError answered with its own status, detail and Retry-After."""
    assert isinstance(exc, GatewayError)
    return error_response(exc.status_code, exc.detail, exc.retry_after)


async def http_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own HTTP errors (no such route, method not allowed) in the same `{"detail": ...}` form."""
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, exc.detail)


async def unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Any other exception: 500 with a fixed detail; the traceback is logged, never sent."""
    # The traceback goes to the log, never to the client.
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal server error; see the gateway log")


EXCEPTION_HANDLERS = {
    GatewayError: gateway_error_handler,
    HTTPException: http_error_handler,
    Exception: unexpected_error_handler,
}
