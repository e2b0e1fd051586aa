"""The client side of the supervisor's control socket, for the CLI and the gateway (which is supervised: it asks)."""

from __future__ import annotations

import socket as sockets
import time
from typing import Any, Callable

import zmq
import zmq.asyncio

from shared.protocol import Control, ControlReply, Message, RamdiskState, decode, encode

RAMDISK_POLL_SECONDS = 0.3


class NotRunning(RuntimeError):
    """No supervisor answered on this instance's control socket."""


class CommandFailed(RuntimeError):
    """The supervisor refused the command; the message says why, `kind` what sort of refusal it is."""

    def __init__(self, message: str, kind: str = "refused") -> None:
        super().__init__(message)
        self.kind = kind


def send_command(address: str, command: str, arguments: dict[str, Any] | None = None,
                 timeout: float = 3.0) -> ControlReply:
    """The supervisor's reply to `command`. NotRunning when none answers within `timeout`; CommandFailed when it
    refused (its reason is the message)."""
    if _nobody_listens(address):
        raise NotRunning(f"no supervisor listens on {address}")
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
    return _checked(reply)


async def ask(context: zmq.asyncio.Context, address: str, command: str, arguments: dict[str, Any] | None = None,
              timeout: float = 3.0) -> ControlReply:
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
    return _checked(reply)


def _nobody_listens(address: str) -> bool:
    """True when `address` is an ipc:// socket that no process listens on (gone, or never made), which the kernel
    says at once; ZeroMQ would wait out the whole timeout for an answer that cannot come (a second per `start`)."""
    if not address.startswith("ipc://"):
        return False
    probe = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
    try:
        probe.connect(address.removeprefix("ipc://"))
    except (FileNotFoundError, ConnectionRefusedError):
        return True
    except OSError:  # anything else (a path too long, say): let ZeroMQ try and time out as before
        return False
    finally:
        probe.close()
    return False


def _checked(reply: Message) -> ControlReply:
    if not isinstance(reply, ControlReply):
        raise CommandFailed(f"unexpected reply {type(reply).__name__}")
    if reply.error:
        raise CommandFailed(reply.error, reply.error_kind or "refused")
    return reply


def ramdisk_action(address: str, action: str) -> RamdiskState:
    """The supervisor's RAM-disk state after `action` ("status", "clear" or "use")."""
    state = send_command(address, "ramdisk", {"action": action}).ramdisk
    if state is None:
        raise CommandFailed("the supervisor's ramdisk answer carried no state")
    return state


def wait_for_ramdisk(address: str, done: Callable[[RamdiskState], bool], within: float) -> RamdiskState | None:
    """Poll the supervisor's RAM-disk state until `done` holds; None when it does not within `within` seconds.

    Moving workers is the supervisor's rolling replacement, which takes up to a start and a stop per worker;
    the CLI and `POST /clear_ramdisk/` both wait here for it.
    """
    deadline = time.monotonic() + within
    while True:
        state = ramdisk_action(address, "status")
        if done(state):
            return state
        if time.monotonic() >= deadline:
            return None
        time.sleep(RAMDISK_POLL_SECONDS)


def clear_ramdisk(address: str, within: float) -> RamdiskState | None:
    """Ask the supervisor to clear the RAM disk and wait until it is done (None: not within `within` seconds);
    the state's `last_error` or `last_result` says how it went."""
    ramdisk_action(address, "clear")
    return wait_for_ramdisk(address, lambda state: not state.clearing, within)


def is_running(address: str) -> bool:
    """True when a supervisor answers on `address` within a second."""
    try:
        send_command(address, "status", timeout=1.0)
        return True
    except NotRunning:
        return False
