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
    status_code = 422


class PayloadTooLarge(GatewayError):
    status_code = 413


class UnsupportedMediaType(GatewayError):
    status_code = 415


class Overloaded(GatewayError):
    status_code = 429
    retry_after = 1


class Unavailable(GatewayError):
    status_code = 503
    retry_after = 2


class GatewayTimeout(GatewayError):
    status_code = 504


class WorkerFailed(GatewayError):
    status_code = 502


def error_response(status_code: int, detail: object, retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)


async def gateway_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GatewayError)
    return error_response(exc.status_code, exc.detail, exc.retry_after)


async def http_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, exc.detail)


async def unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    # The traceback goes to the log, never to the client.
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal server error; see the gateway log")


EXCEPTION_HANDLERS = {
    GatewayError: gateway_error_handler,
    HTTPException: http_error_handler,
    Exception: unexpected_error_handler,
}
