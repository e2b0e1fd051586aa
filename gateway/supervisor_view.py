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

import zmq
import zmq.asyncio

from shared.model_health import ModelHealth
from shared.protocol import Control, ControlReply, decode, encode
from shared.settings import Settings

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0
STALE_AFTER_SECONDS = 3.0  # an answer older than this (the supervisor is gone or busy) is not repeated


class SupervisorView:
    def __init__(self, settings: Settings, context: zmq.asyncio.Context) -> None:
        self._address = settings.control_address
        self._context = context
        self._health: dict[str, ModelHealth] = {}
        self._updated_at = 0.0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._poll_loop(), name="supervisor-view")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def health(self, model: str) -> ModelHealth | None:
        """The supervisor's latest word on `model`, or None when it has none that is recent."""
        if time.monotonic() - self._updated_at > STALE_AFTER_SECONDS:
            return None
        return self._health.get(model)

    async def _poll_loop(self) -> None:
        socket: zmq.asyncio.Socket | None = None
        try:
            while True:
                if socket is None:
                    socket = self._context.socket(zmq.REQ)
                    socket.setsockopt(zmq.LINGER, 0)
                    socket.connect(self._address)
                reply = await self._ask(socket)
                if reply is None:  # a REQ socket that got no answer cannot send again (Lazy Pirate: a new one)
                    socket.close(linger=0)
                    socket = None
                else:
                    self._health = {h.model: h for h in map(ModelHealth.from_dict, reply.data.get("models", []))}
                    self._updated_at = time.monotonic()
                await asyncio.sleep(POLL_SECONDS)
        finally:
            if socket is not None:
                socket.close(linger=0)

    async def _ask(self, socket: zmq.asyncio.Socket) -> ControlReply | None:
        await socket.send_multipart(encode(Control(command="health")))
        if not await socket.poll(int(STALE_AFTER_SECONDS * 1000)):
            return None
        reply = decode(await socket.recv_multipart())
        if not isinstance(reply, ControlReply) or reply.error:
            log.warning("the supervisor's health answer was unusable: %r", reply)
            return None
        return reply
