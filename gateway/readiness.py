"""Whether the service can answer embedding requests: a model is listed, every listed model has a live worker,
the writer answers."""

from __future__ import annotations

from gateway.state import Services
from shared.model_health import no_worker_reason


def writer_silence_limit(services: Services) -> float:
    """The writer counts as alive while it answered a PING within this many seconds (as workers' heartbeats)."""
    settings = services.settings
    return settings.heartbeat_interval_seconds * settings.heartbeat_liveness


def writer_alive(services: Services) -> bool:
    """True while the writer has spoken within the last HEARTBEAT_INTERVAL_SECONDS x HEARTBEAT_LIVENESS seconds."""
    silent = services.writer.silent_for()
    return silent is not None and silent <= writer_silence_limit(services)


def readiness_problems(services: Services) -> list[str]:
    """Why the service is not ready, one reason per line; empty when it is."""
    served = services.embeddings.models.served()
    problems = [no_worker_reason(model, services.supervisor.health(model)) for model in served
                if not services.broker.live_workers(model)]
    if not served:
        problems.append("no model is loaded: `supervisor.py scale MODEL N` or POST /admin/models/MODEL/scale loads one")
    silent = services.writer.silent_for()
    if silent is None:
        problems.append("the writer has not answered a ping yet")
    elif not writer_alive(services):
        problems.append(f"the writer has not answered a ping for {silent:.1f}s (HEARTBEAT_INTERVAL_SECONDS x "
                        f"HEARTBEAT_LIVENESS = {writer_silence_limit(services):g}s)")
    return problems
