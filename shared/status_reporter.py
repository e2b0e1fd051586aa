"""Status reports from every child to the supervisor's event socket (PUSH → PULL)."""

from __future__ import annotations

import zmq

from shared.protocol import Status, encode


class StatusReporter:
    """Owned by one thread. Drops reports when the supervisor is away rather than blocking the caller."""

    def __init__(self, context: zmq.Context, address: str) -> None:
        self._socket = context.socket(zmq.PUSH)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.SNDHWM, 10)
        self._socket.connect(address)

    def send(self, status: Status) -> None:
        """Send `status` without waiting; dropped when the supervisor is not taking reports (ten already queued)."""
        try:
            self._socket.send_multipart(encode(status), flags=zmq.NOBLOCK)
        except zmq.Again:
            pass

    def close(self, linger_seconds: float = 0.0) -> None:
        """Close; with `linger_seconds`, first give queued reports that long to reach the supervisor."""
        self._socket.close(linger=int(linger_seconds * 1000))
