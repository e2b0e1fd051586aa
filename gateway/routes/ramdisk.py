"""`POST /clear_ramdisk/`, the original service's endpoint: free the RAM disk the models are served from.

The gateway does not touch the mount itself: it asks the supervisor (over the control socket the CLI uses),
which moves the workers back to the files on disk and unmounts once none maps from the RAM disk. The
answer comes when that is done, so a client that gets 200 knows the memory is free.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import GatewayError, GatewayTimeout, Unavailable
from gateway.openapi import Endpoint
from gateway.state import services
from shared import control_client
from shared.control_client import CommandFailed, NotRunning

DISABLED_MESSAGE = "RAM Disk usage is disabled."  # the original service's words
CLEARED_MESSAGE = "RAM Disk cleared successfully."


class ClearRamdiskResponse(BaseModel):
    """The answer of POST /clear_ramdisk/: the original service's message, and what the supervisor did."""

    message: str = Field(..., description="What happened, in the original service's words.")
    detail: str = Field("", description="What the supervisor did (unmounted, or nothing was mounted).")


async def clear_ramdisk(request: Request) -> Response:
    """POST /clear_ramdisk/: answers once the supervisor has moved the workers off the RAM disk and unmounted it."""
    settings = services(request).settings
    if not settings.use_ramdisk:
        return JSONResponse({"message": DISABLED_MESSAGE, "detail": "USE_RAMDISK=false"})
    try:
        # The control client blocks (REQ sockets with a timeout, then polling): keep it off the event loop.
        state = await asyncio.to_thread(control_client.clear_ramdisk, settings.control_address,
                                        settings.worker_move_seconds)
    except NotRunning as exc:
        raise Unavailable(f"the supervisor did not answer: {exc}") from exc
    except CommandFailed as exc:
        raise GatewayError(str(exc)) from exc
    if state is None:
        raise GatewayTimeout("the workers did not leave the RAM disk within STARTUP_TIMEOUT_SECONDS + "
                             "STOP_TIMEOUT_SECONDS; `supervisor.py ramdisk status` shows where they are")
    if state.last_error:
        raise GatewayError(state.last_error)
    return JSONResponse({"message": CLEARED_MESSAGE, "detail": state.last_result})


ENDPOINTS = [
    Endpoint("POST", "/clear_ramdisk/", clear_ramdisk,
             "Move the workers back to the model files on disk, then unmount the RAM disk", "ramdisk",
             response_model=ClearRamdiskResponse, errors=(500, 503, 504)),
]
