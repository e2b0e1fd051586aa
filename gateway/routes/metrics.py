"""GET /metrics: the service's Prometheus metrics in the text exposition format (see gateway/metrics.py)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from gateway.metrics import metrics_of
from gateway.openapi import Endpoint


async def metrics(request: Request) -> Response:
    """GET /metrics: the app's metrics in Prometheus' text exposition format."""
    return Response(metrics_of(request).exposition(), media_type=CONTENT_TYPE_LATEST)


ENDPOINTS = [
    Endpoint("GET", "/metrics", metrics, "Prometheus metrics: requests, latency, cache, batches, workers, writer",
             "operations", errors=(), response_content={"text/plain": {"schema": {"type": "string"}}}),
]
