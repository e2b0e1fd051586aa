"""The admin API: the operator's `models`, `scale` and `pull` over HTTP, answered by the supervisor.

The gateway holds no model state of its own here: each request is one command on the supervisor's control
socket (gateway/supervisor_view.py), the same the CLI sends. With USE_SECURITY_TOKEN on, the token guards
these endpoints as every other (gateway/auth.py); with it off they answer only clients on loopback, since a
service that listens on every interface must not let anyone on the network start or stop its workers.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from pydantic import BaseModel, Field, model_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import Conflict, Forbidden, NotFound, Unavailable
from gateway.openapi import Endpoint
from gateway.state import services
from gateway.validation import parse_json_body
from modelstore.download import is_url
from shared.control_client import CommandFailed, NotRunning
from shared.protocol import ControlReply

MAX_WORKERS = 256


class ScaleRequest(BaseModel):
    """The body of POST /admin/models/{name}/scale."""

    workers: int = Field(..., ge=0, le=MAX_WORKERS, description="Workers the model should have; 0 unloads it.")


class ScaleResponse(BaseModel):
    """What the supervisor set."""

    model: str
    workers: int
    threads_per_worker: int


class PullRequest(BaseModel):
    """The body of POST /admin/models/pull: a catalogue name, or the http(s) URL of a .gguf file."""

    model: str | None = Field(None, description="A name from `supervisor.py models list`.")
    url: str | None = Field(None, description="The http(s) URL of a .gguf file.")
    name: str | None = Field(None, description="The name to install a URL's model under (default: its file name).")

    @model_validator(mode="after")
    def _one_target(self) -> PullRequest:
        if bool(self.model) == bool(self.url):
            raise ValueError("give either model (a catalogue name) or url (a .gguf file), not both or neither")
        if self.url and not is_url(self.url):
            raise ValueError("url must be an http:// or https:// URL")
        return self


def _only_loopback_without_token(request: Request) -> None:
    settings = services(request).settings
    if settings.use_security_token:
        return  # TokenAuth has checked it already
    host = request.client.host if request.client else ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise Forbidden(f"the admin API answers only on loopback while USE_SECURITY_TOKEN is off (this request came "
                        f"from {host or 'an unknown address'}); set USE_SECURITY_TOKEN and SECURITY_TOKEN to use it "
                        "from other hosts")


async def _command(request: Request, command: str, arguments: dict[str, Any] | None = None) -> ControlReply:
    try:
        return await services(request).supervisor.command(command, arguments)
    except NotRunning as exc:
        raise Unavailable(f"the supervisor did not answer: {exc}") from exc
    except CommandFailed as exc:
        raise (NotFound if exc.kind == "not_found" else Conflict)(str(exc)) from exc


async def list_models(request: Request) -> Response:
    """GET /admin/models: every installed model with its state and workers, cache counters, pulls, memory."""
    _only_loopback_without_token(request)
    return JSONResponse((await _command(request, "models")).data)


async def scale_model(request: Request) -> Response:
    """POST /admin/models/{name}/scale: set a model's worker count (kept across restarts, as `scale`)."""
    _only_loopback_without_token(request)
    body = await parse_json_body(request, ScaleRequest)
    reply = await _command(request, "scale", {"model": request.path_params["name"], "count": body.workers})
    return JSONResponse({"model": reply.data["model"], "workers": reply.data["count"],
                         "threads_per_worker": reply.data["threads_per_worker"]})


async def pull_model(request: Request) -> Response:
    """POST /admin/models/pull: start installing a model; its progress is in GET /admin/models."""
    _only_loopback_without_token(request)
    body = await parse_json_body(request, PullRequest)
    reply = await _command(request, "pull", {"target": body.model or body.url or "", "name": body.name or ""})
    return JSONResponse({"pull": reply.data}, status_code=202)


ENDPOINTS = [
    Endpoint("GET", "/admin/models", list_models,
             "Installed and served models with their workers, memory and state; cache counters; pulls", "admin",
             errors=(401, 403, 503)),
    Endpoint("POST", "/admin/models/pull", pull_model,
             "Install a catalogue model or a .gguf URL in the background (progress in GET /admin/models)", "admin",
             request_model=PullRequest, errors=(401, 403, 404, 409, 422, 503)),
    Endpoint("POST", "/admin/models/{name}/scale", scale_model,
             "Set a model's worker count: any installed model, 0 unloads it; kept across restarts", "admin",
             request_model=ScaleRequest, response_model=ScaleResponse, errors=(401, 403, 404, 409, 422, 503)),
]
