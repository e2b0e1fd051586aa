"""A plain ZeroMQ socket driven by the gateway's event loop: messages handed to a callback as they arrive, sends
that never wait.

pyzmq's asyncio sockets make a Future for every receive and every send, and reschedule themselves through
loop callbacks around each; on the broker's ROUTER, which carries two messages per uncached request, that was
about a tenth of the gateway's CPU per request (py-spy, GIL samples). Here the socket's file descriptor is
watched directly and, when it fires, every waiting message is read at once with NOBLOCK.

ZeroMQ's descriptor is edge-like: it signals that the socket's state may have changed, and any operation on the
socket (a send included) may consume that signal while messages wait. So after each send the socket's EVENTS
are checked, and a drain is scheduled when a message is waiting (what pyzmq's asyncio socket does as well).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

import zmq
import zmq.asyncio

log = logging.getLogger(__name__)
_DRAIN_LIMIT = 512  # messages read per callback before letting the loop run the rest (and come back)


class LoopSocket:
    """A socket of type `kind` on the gateway's ZeroMQ context, run on the event loop; `on_message` gets each
    message's frames and must not block. Options, bind and connect go to `.socket` before `start()`."""

    def __init__(self, context: zmq.asyncio.Context, kind: int, on_message: Callable[[list[bytes]], None]) -> None:
        # A plain socket on the same libzmq context (a shadow shares it): its I/O thread, inproc, term().
        self.socket: zmq.Socket[bytes] = zmq.Context.shadow(context.underlying).socket(kind)
        self.socket.setsockopt(zmq.LINGER, 0)
        self._on_message = on_message
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_scheduled = False

    def start(self) -> None:
        """Begin handing arriving messages to the callback (call on the loop, once the socket is bound or
        connected)."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.socket.FD, self._drain)
        self._drain_soon()  # messages that came before the reader was added raised no new signal

    def send(self, frames: list[bytes]) -> zmq.ZMQError | None:
        """Send `frames` with NOBLOCK: None if ZeroMQ queued them, else the error (EAGAIN, or EHOSTUNREACH on a
        ROUTER_MANDATORY socket whose peer is gone)."""
        try:
            self.socket.send_multipart(frames, zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            return exc
        finally:
            self._check_events()
        return None

    def close(self) -> None:
        """Stop watching and close the socket at once (linger 0)."""
        if self._loop is not None and not self.socket.closed:
            self._loop.remove_reader(self.socket.FD)
        self.socket.close(linger=0)

    def _check_events(self) -> None:
        if self._loop is None or self._drain_scheduled or self.socket.closed:
            return
        if int(self.socket.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            self._drain_soon()

    def _drain_soon(self) -> None:
        assert self._loop is not None
        self._drain_scheduled = True
        self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._drain_scheduled = False
        for _ in range(_DRAIN_LIMIT):
            # EVENTS rather than a receive until EAGAIN: pyzmq's Again costs twice the check (8.7 vs 3.7 us here).
            if self.socket.closed or not int(self.socket.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                return
            frames = self.socket.recv_multipart(zmq.NOBLOCK)
            try:
                self._on_message(frames)
            except Exception:  # one bad message must not stop the socket
                log.exception("error handling a message")
        self._drain_soon()
