"""A ZeroMQ socket run on the event loop (gateway/loop_socket.py), between real sockets over ipc."""

from __future__ import annotations

import asyncio
from pathlib import Path

import zmq
import zmq.asyncio

from gateway.loop_socket import LoopSocket
from tests.harness import until


def _pair(tmp_path: Path, received: list[list[bytes]]) -> tuple[zmq.asyncio.Context, LoopSocket, zmq.Socket[bytes]]:
    context = zmq.asyncio.Context()
    router = LoopSocket(context, zmq.ROUTER, received.append)
    router.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
    address = f"ipc://{tmp_path}/router.ipc"
    router.socket.bind(address)
    peer: zmq.Socket[bytes] = zmq.Context.shadow(context.underlying).socket(zmq.DEALER)
    peer.setsockopt(zmq.ROUTING_ID, b"peer")
    peer.setsockopt(zmq.LINGER, 0)
    peer.connect(address)
    return context, router, peer


def test_every_message_a_peer_sends_reaches_the_callback_in_order(tmp_path: Path) -> None:
    async def run() -> None:
        received: list[list[bytes]] = []
        context, router, peer = _pair(tmp_path, received)
        router.start()
        for number in range(1000):
            peer.send_multipart([b"n", str(number).encode()])
        await until(lambda: len(received) == 1000)
        assert [frames[2] for frames in received] == [str(n).encode() for n in range(1000)]
        assert {frames[0] for frames in received} == {b"peer"}
        router.close()
        peer.close()
        context.term()
    asyncio.run(run())


def test_messages_that_arrive_while_the_loop_only_sends_are_still_received(tmp_path: Path) -> None:
    # A send may consume the descriptor's signal that messages wait: the socket must look again after it.
    async def run() -> None:
        received: list[list[bytes]] = []
        context, router, peer = _pair(tmp_path, received)
        router.start()
        peer.send_multipart([b"hello"])
        await until(lambda: len(received) == 1)
        for number in range(200):
            peer.send_multipart([str(number).encode()])
            assert router.send([b"peer", b"reply"]) is None
            await asyncio.sleep(0)
        await until(lambda: len(received) == 201)
        assert len(received) == 201
        router.close()
        peer.close()
        context.term()
    asyncio.run(run())


def test_a_send_to_a_peer_that_is_gone_returns_the_error_instead_of_raising(tmp_path: Path) -> None:
    async def run() -> None:
        context, router, peer = _pair(tmp_path, [])
        router.start()
        error = router.send([b"nobody", b"hello"])
        assert isinstance(error, zmq.ZMQError) and error.errno == zmq.EHOSTUNREACH
        router.close()
        peer.close()
        context.term()
    asyncio.run(run())
