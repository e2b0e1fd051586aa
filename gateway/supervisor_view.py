"""What the supervisor knows about each model, polled once a second, so that a 503 can say why.

The broker sees only the workers that registered; why a model has none (killed by SIGSEGV 3 times, waiting
out a restart backoff, failed its canary, scaled to 0) is the supervisor's knowledge. This task asks for it over
the control socket (the `health` command) and keeps the last answer; with no supervisor (workers started by
hand elsewhere) it knows nothing and the broker's answers stay as they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Callable

import zmq
import zmq.asyncio

from shared.control_client import CommandFailed, NotRunning, ask
from shared.protocol import ControlReply, ModelHealth, ProtocolError
from shared.settings import Settings

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0
STALE_AFTER_SECONDS = 3.0  # an answer older than this (the supervisor is gone or busy) is not repeated


class SupervisorView:
    """The gateway's copy of the supervisor's latest health report per model, polled over the control socket."""

    def __init__(self, settings: Settings, context: zmq.asyncio.Context) -> None:
        self._address = settings.control_address
        self._context = context
        self._health: dict[str, ModelHealth] = {}
        self._updated_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self.listeners: list[Callable[[list[ModelHealth]], None]] = []  # told every report (the model roster)

    async def start(self) -> None:
        """Start asking the supervisor for its health report once a second."""
        self._task = asyncio.create_task(self._poll_loop(), name="supervisor-view")

    async def stop(self) -> None:
        """Cancel the polling task and wait for it to end."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def command(self, command: str, arguments: dict[str, Any] | None = None,
                      timeout: float = 10.0) -> ControlReply:
        """Send the supervisor a command (the admin API's, a load on demand); NotRunning or CommandFailed."""
        return await ask(self._context, self._address, command, arguments, timeout=timeout)

    def health(self, model: str) -> ModelHealth | None:
        """The supervisor's latest word on `model`, or None when it has none that is recent."""
        if time.monotonic() - self._updated_at > STALE_AFTER_SECONDS:
            return None
        return self._health.get(model)

    async def _poll_loop(self) -> None:
        while True:
            try:
                reply = await ask(self._context, self._address, "health", timeout=STALE_AFTER_SECONDS)
            except NotRunning:
                pass  # no supervisor (yet, or any more): the last answer goes stale
            except (CommandFailed, ProtocolError) as exc:
                log.warning("the supervisor's health answer was unusable: %s", exc)
            else:
                self._health = {health.model: health for health in reply.health}
                self._updated_at = time.monotonic()
                for listener in self.listeners:
                    listener(reply.health)
            await asyncio.sleep(POLL_SECONDS)
