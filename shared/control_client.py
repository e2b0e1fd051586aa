"""The client side of the supervisor's control socket, for the CLI and the gateway (which is supervised: it asks)."""

from __future__ import annotations

from typing import Any

import zmq
import zmq.asyncio

from shared.protocol import Control, ControlReply, Message, decode, encode


class NotRunning(RuntimeError):
    """No supervisor answered on this instance's control socket."""


class CommandFailed(RuntimeError):
    """The supervisor refused the command; the message says why."""


def send_command(address: str, command: str, arguments: dict[str, Any] | None = None,
                 timeout: float = 3.0) -> dict[str, Any]:
    context = zmq.Context()
    socket = context.socket(zmq.REQ)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        socket.connect(address)
        socket.send_multipart(encode(Control(command=command, arguments=arguments or {})))
        if not socket.poll(int(timeout * 1000)):
            raise NotRunning(f"no supervisor answered on {address} within {timeout:g}s")
        reply = decode(socket.recv_multipart())
    finally:
        socket.close(linger=0)
        context.term()
    return _data(reply)


async def ask(context: zmq.asyncio.Context, address: str, command: str, arguments: dict[str, Any] | None = None,
              timeout: float = 3.0) -> dict[str, Any]:
    """`send_command` for an asyncio caller (the gateway), on its context. A fresh REQ socket per call: one that
    got no answer could not send again."""
    socket = context.socket(zmq.REQ)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        socket.connect(address)
        await socket.send_multipart(encode(Control(command=command, arguments=arguments or {})))
        if not await socket.poll(int(timeout * 1000)):
            raise NotRunning(f"no supervisor answered on {address} within {timeout:g}s")
        reply = decode(await socket.recv_multipart())
    finally:
        socket.close(linger=0)
    return _data(reply)


def _data(reply: Message) -> dict[str, Any]:
    if not isinstance(reply, ControlReply):
        raise CommandFailed(f"unexpected reply {type(reply).__name__}")
    if reply.error:
        raise CommandFailed(reply.error)
    return reply.data


def is_running(address: str) -> bool:
    try:
        send_command(address, "status", timeout=1.0)
        return True
    except NotRunning:
        return False
