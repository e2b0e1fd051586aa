"""GET /console: the operator console page, and its script and style sheet under /console/assets/.

The page is static (no data in it, nothing from a CDN): its script reads GET /admin/models every 1.5 s and calls
the admin and embedding endpoints from the browser, with the security token the operator types in. These are plain
Starlette routes, not OpenAPI endpoints: the page is for people, not clients.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

import gateway.console

CONSOLE_DIR = Path(gateway.console.__file__).resolve().parent
ASSETS_PATH = "/console/assets"
# Only these files are served: not the package's Python files, whatever a client asks for.
ASSETS = {"console.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8"}
# Revalidate on every load, so that an operator sees a new release's page without clearing the cache.
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


async def console_page(_request: Request) -> Response:
    """GET /console: the console's HTML page."""
    return FileResponse(CONSOLE_DIR / "console.html", media_type="text/html; charset=utf-8", headers=HEADERS)


def _asset(name: str) -> Route:
    """The route of the asset `name`, at /console/assets/<name>."""

    async def asset(_request: Request) -> Response:
        return FileResponse(CONSOLE_DIR / name, media_type=ASSETS[name], headers=HEADERS)

    return Route(f"{ASSETS_PATH}/{name}", asset, methods=["GET"], name=f"console-{name}")


ROUTES: list[BaseRoute] = [
    Route("/console", console_page, methods=["GET"], name="console"),
    *(_asset(name) for name in ASSETS),
]
