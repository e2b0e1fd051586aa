"""Sending on pyzmq's asyncio sockets without waiting, and knowing at once whether ZeroMQ took the message."""

from __future__ import annotations

import asyncio
from typing import cast

import zmq
import zmq.asyncio


def send_now(socket: zmq.asyncio.Socket, frames: list[bytes]) -> BaseException | None:
    """Send `frames` with NOBLOCK: None if ZeroMQ queued them, else the error (EAGAIN, or EHOSTUNREACH on a
    ROUTER_MANDATORY socket whose peer is gone).

    pyzmq's asyncio socket tries a NOBLOCK send at once and reports its failure on the future it returns (typed
    as a plain Awaitable), so the answer is there without awaiting.
    """
    sent = cast("asyncio.Future[object]", socket.send_multipart(frames, flags=zmq.NOBLOCK))
    return sent.exception() if sent.done() else None
