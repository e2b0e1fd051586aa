"""The gateway's HTTP protocol: uvicorn's httptools protocol, each answer written to the socket in one call.

The protocol is uvicorn's own, parsing real request bytes and running a real Starlette app; only the transport
under it records what is written (the count of writes is what these tests are about, and a socket cannot show
it: TCP may merge two segments or split one).
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from uvicorn.server import ServerState

from gateway.http_protocol import CorkedHttpToolsProtocol, CorkedTransport


class RecordingTransport(asyncio.Transport):
    """A transport that keeps every write, as the kernel would see it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8089), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


async def stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"first"
        await asyncio.sleep(0.05)
        yield b"second"

    return StreamingResponse(chunks())


def serve(request: bytes, until: bytes, times: int = 1) -> RecordingTransport:
    """Feed `request` to a CorkedHttpToolsProtocol and run the loop until `until` has been written `times`."""
    app = Starlette(routes=[Route("/hello", hello), Route("/stream", stream)])

    async def run() -> RecordingTransport:
        config = uvicorn.Config(app, log_config=None, access_log=False, http=CorkedHttpToolsProtocol)
        config.load()
        transport = RecordingTransport()
        protocol = CorkedHttpToolsProtocol(config, ServerState(), app_state={})
        protocol.connection_made(transport)
        protocol.data_received(request)
        deadline = asyncio.get_running_loop().time() + 2.0
        while b"".join(transport.writes).count(until) < times and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        return transport

    return asyncio.run(run())


def test_an_answer_is_written_in_one_call() -> None:
    transport = serve(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", until=b"hello")
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and transport.writes[0].endswith(b"\r\n\r\nhello")


def test_pipelined_requests_get_one_write_each_in_order() -> None:
    request = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
    transport = serve(request * 3, until=b"hello", times=3)
    assert len(transport.writes) == 3
    assert all(write.endswith(b"hello") for write in transport.writes)


def test_a_streamed_chunk_is_not_held_until_the_response_ends() -> None:
    transport = serve(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n", until=b"second")
    # The head and the first chunk leave together, before the second chunk is made (50 ms later).
    assert len(transport.writes) >= 2
    assert b"first" in transport.writes[0] and b"second" not in transport.writes[0]


def test_a_connection_close_answer_is_written_before_the_close() -> None:
    transport = serve(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", until=b"hello")
    assert transport.closed
    assert len(transport.writes) == 1 and transport.writes[0].endswith(b"hello")


def test_writes_held_for_a_closed_connection_are_dropped() -> None:
    async def run() -> RecordingTransport:
        transport = RecordingTransport()
        corked = CorkedTransport(transport, asyncio.get_running_loop())
        corked.write(b"answer")
        transport.closed = True  # the peer went away before the loop's next turn
        await asyncio.sleep(0)
        return transport

    assert asyncio.run(run()).writes == []


def test_writes_within_one_turn_are_joined_by_the_next() -> None:
    async def run() -> tuple[list[bytes], list[bytes]]:
        transport = RecordingTransport()
        corked = CorkedTransport(transport, asyncio.get_running_loop())
        corked.write(b"head ")
        corked.write(b"body")
        before = list(transport.writes)
        await asyncio.sleep(0)
        return before, transport.writes

    before, after = asyncio.run(run())
    assert before == [] and after == [b"head body"]
