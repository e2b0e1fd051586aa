"""The optional security token, checked before any endpoint runs (pure ASGI: no per-request task overhead).

Accepted as `Authorization: Bearer <token>` or as the original service's `token` query parameter, and
compared in constant time. 401 when no token is given, 403 when a wrong one is. The health check stays
open so that orchestrators can probe it; the docs page and OpenAPI document stay open too (they hold no
data, and clients need them to discover the API), and so does the console page (it holds no data: it asks for
the token and sends it with every call); /metrics is protected (Prometheus can send a bearer token).
"""

from __future__ import annotations

import hmac
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import error_response

OPEN_PATHS = frozenset({"/health", "/", "/openapi.json", "/console"})
OPEN_PREFIXES = ("/swagger-assets/", "/console/")


class TokenAuth:
    """ASGI middleware: 401 without the security token, 403 with a wrong one, except on the open paths."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self._app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._is_open(scope["path"]):
            await self._app(scope, receive, send)
            return
        given = self._given_token(scope)
        if given is None:
            response = error_response(401, "a security token is required: send 'Authorization: Bearer <token>'")
            response.headers["WWW-Authenticate"] = "Bearer"
        elif not hmac.compare_digest(given, self._token):
            response = error_response(403, "the security token is not valid")
        else:
            await self._app(scope, receive, send)
            return
        await response(scope, receive, send)

    @staticmethod
    def _is_open(path: str) -> bool:
        return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)

    @staticmethod
    def _given_token(scope: Scope) -> bytes | None:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                if scheme.lower() == b"bearer" and credentials.strip():
                    return credentials.strip()
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if query.get("token"):
            return query["token"][0].encode()
        return None
