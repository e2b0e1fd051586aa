"""LOAD_ON_DEMAND: a request for an installed model with no worker asks the supervisor to load it, and waits.

Every request that arrives while a model loads awaits the same load (one `load` command per model at a time),
bounded by LOAD_ON_DEMAND_TIMEOUT_SECONDS; memory admission or the thread allotment can refuse the load, and
the 503 then carries the supervisor's reason. The supervisor unloads the model again once it idles
(MODEL_IDLE_UNLOAD_SECONDS, supervision/on_demand.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from gateway.errors import Unavailable
from gateway.supervisor_view import SupervisorView
from shared.control_client import CommandFailed, NotRunning
from shared.model_health import no_worker_reason
from shared.settings import Settings

POLL_SECONDS = 0.05


class OnDemandLoader:
    """`await load(model)` returns once `model` has a live worker; raises Unavailable saying why it has none."""

    def __init__(self, settings: Settings, supervisor: SupervisorView, has_live_worker: Callable[[str], bool]) -> None:
        self._supervisor = supervisor
        self._timeout = settings.load_on_demand_timeout_seconds
        self._has_live_worker = has_live_worker
        self._loading: dict[str, asyncio.Task[None]] = {}

    async def load(self, model: str) -> None:
        """Load `model` (or join the load in progress) and wait for its first worker."""
        task = self._loading.get(model)
        if task is None or task.done():
            task = self._loading[model] = asyncio.create_task(self._load(model), name=f"load-{model}")
        await asyncio.shield(task)  # a caller that goes away does not cancel the others' load

    async def _load(self, model: str) -> None:
        try:
            await self._supervisor.command("load", {"model": model})
        except CommandFailed as exc:
            raise Unavailable(f"model {model!r} is not loaded and could not be loaded on demand: {exc}") from None
        except NotRunning:
            raise Unavailable(f"model {model!r} is not loaded and the supervisor did not answer to load it; "
                              "retry shortly") from None
        deadline = time.monotonic() + self._timeout
        while not self._has_live_worker(model):
            health = self._supervisor.health(model)
            if health is not None and health.failed_reason:
                raise Unavailable(no_worker_reason(model, health))
            if time.monotonic() > deadline:
                raise Unavailable(f"model {model!r} is loading on demand but had no worker ready within "
                                  f"LOAD_ON_DEMAND_TIMEOUT_SECONDS={self._timeout:g}; retry shortly", retry_after=5)
            await asyncio.sleep(POLL_SECONDS)
