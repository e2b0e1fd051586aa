"""Liveness and readiness for load balancers and orchestrators: GET /health and GET /ready."""

from __future__ import annotations

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.openapi import Endpoint
from gateway.readiness import readiness_problems, writer_alive
from gateway.state import services


class HealthResponse(BaseModel):
    """The answer of GET /health: always `ok`."""

    status: str = Field(..., examples=["ok"])


class ReadinessResponse(BaseModel):
    """The answer of GET /ready, with 200 or 503 alike: whether the service is ready, and what is missing."""

    status: str = Field(..., description="ready or not ready")
    reasons: list[str] = Field(..., description="Why not ready; empty when ready.")
    live_workers: dict[str, int] = Field(..., description="Live workers per served model.")
    writer_alive: bool


async def health(_request: Request) -> Response:
    """200 whenever the gateway process answers HTTP; it says nothing about workers or the writer."""
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    """GET /ready: 200 when every served model has a live worker and the writer answers, else 503 saying why."""
    state = services(request)
    problems = readiness_problems(state)
    body = {"status": "not ready" if problems else "ready", "reasons": problems,
            "live_workers": {model: len(state.broker.live_workers(model)) for model in state.embeddings.models.served()},
            "writer_alive": writer_alive(state)}
    if problems:
        return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})
    return JSONResponse(body)


ENDPOINTS = [
    Endpoint("GET", "/health", health, "Liveness: 200 while the gateway process is up", "operations",
             response_model=HealthResponse, errors=()),
    Endpoint("GET", "/ready", ready,
             "Readiness: 200 when every served model has a live worker and the writer answers, else 503 with reasons",
             "operations", response_model=ReadinessResponse, errors=(503,), error_model=ReadinessResponse),
]
