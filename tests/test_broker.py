"""The gateway's broker, routing only: real ZeroMQ sockets, fake workers that answer by hand."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import numpy as np
import pytest
import zmq
import zmq.asyncio

from gateway.broker import Broker
from gateway.errors import GatewayTimeout, Overloaded, Unavailable
from shared.protocol import Cancel, Embed, Heartbeat, Message, Ready, Reregister, Results, decode, encode
from shared.settings import Settings, load_settings

MODEL = "m"


def _settings(tmp_path: Path, **overrides: str) -> Settings:
    values = {"DATA_DIR": str(tmp_path), "HEARTBEAT_INTERVAL_SECONDS": "0.1", "WORKER_WAIT_SECONDS": "0.3",
              "REQUEST_TIMEOUT_SECONDS": "2", **overrides}
    return load_settings(tmp_path / "none.env", overrides=values)


class FakeWorker:
    def __init__(self, context: zmq.asyncio.Context, address: str, name: str, credits: int = 4) -> None:
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.ROUTING_ID, name.encode())
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(address)
        self.ready = Ready(model=MODEL, worker_id=1, pid=1, dimensions=2, max_tokens=8, credits=credits, threads=1)

    async def register(self) -> None:
        await self.socket.send_multipart(encode(self.ready))
        self._heartbeats = asyncio.create_task(self._beat())

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            await self.socket.send_multipart(encode(Heartbeat()))

    def fall_silent(self) -> None:
        self._heartbeats.cancel()

    async def receive(self, timeout: float = 2.0) -> Message:
        frames = await asyncio.wait_for(self.socket.recv_multipart(), timeout)
        return decode(frames)

    async def receive_embed(self) -> Embed:
        while True:
            message = await self.receive()
            if isinstance(message, Embed):
                return message

    async def answer(self, embed: Embed, value: float = 1.0) -> None:
        vectors = np.full((len(embed.texts), 2), value, dtype=np.float32)
        await self.answer_together([embed], [vectors])

    async def answer_together(self, embeds: list[Embed], vectors: list[np.ndarray]) -> None:
        """One RESULTS for all of `embeds`, as a worker sends the requests one llama.cpp call finished."""
        await self.socket.send_multipart(encode(Results(
            request_ids=[embed.request_id for embed in embeds], rows=[len(embed.texts) for embed in embeds],
            token_counts=[1] * sum(len(embed.texts) for embed in embeds), vectors=np.vstack(vectors))))


async def registered(broker: Broker, context: zmq.asyncio.Context, name: str, credits: int = 4) -> FakeWorker:
    """A fake worker connected to `broker` that has sent its READY."""
    worker = FakeWorker(context, broker._settings.worker_bind_address, name, credits)
    await worker.register()
    return worker


@pytest.fixture
async def context() -> AsyncIterator[zmq.asyncio.Context]:
    ctx = zmq.asyncio.Context()
    yield ctx
    ctx.destroy(linger=0)


async def _broker(tmp_path: Path, context: zmq.asyncio.Context, **overrides: str) -> Broker:
    (tmp_path / "run").mkdir(exist_ok=True)
    broker = Broker(_settings(tmp_path, **overrides), context)
    await broker.start()
    return broker


def run(coroutine_function: Callable[[Path, zmq.asyncio.Context], Awaitable[None]]) -> Callable[[Path], None]:
    """Run an async test on a fresh event loop (no pytest-asyncio needed)."""
    def wrapper(tmp_path: Path) -> None:
        async def main() -> None:
            context = zmq.asyncio.Context()
            try:
                await coroutine_function(tmp_path, context)
            finally:
                context.destroy(linger=0)
        asyncio.run(main())
    wrapper.__name__ = coroutine_function.__name__
    return wrapper


@run
async def test_a_request_goes_to_a_registered_worker_and_its_result_comes_back(tmp_path: Path,
                                                                               context: zmq.asyncio.Context) -> None:
    broker = await _broker(tmp_path, context)
    worker = await registered(broker, context, "w1")
    pending = asyncio.create_task(broker.embed(MODEL, ["hello"]))
    embed = await worker.receive_embed()
    assert embed.texts == ["hello"]
    await worker.answer(embed, 0.5)
    result = await pending
    assert np.allclose(result.vectors, 0.5)
    await broker.stop()


@run
async def test_one_results_for_two_requests_answers_each_with_its_own_vectors(tmp_path: Path,
                                                                             context: zmq.asyncio.Context) -> None:
    broker = await _broker(tmp_path, context)
    worker = await registered(broker, context, "w1")
    pending = [asyncio.create_task(broker.embed(MODEL, texts)) for texts in (["a", "b"], ["c"])]
    embeds = [await worker.receive_embed(), await worker.receive_embed()]
    embeds.sort(key=lambda embed: len(embed.texts), reverse=True)  # the two-text request first, as sent
    await worker.answer_together(embeds, [np.full((2, 2), 0.25, np.float32), np.full((1, 2), 0.75, np.float32)])
    two, one = await asyncio.gather(*pending)
    assert two.vectors.shape == (2, 2) and np.allclose(two.vectors, 0.25)
    assert one.vectors.shape == (1, 2) and np.allclose(one.vectors, 0.75)
    await broker.stop()


@run
async def test_a_worker_never_holds_more_requests_than_its_credits(tmp_path: Path, context: zmq.asyncio.Context) -> None:
    broker = await _broker(tmp_path, context)
    worker = await registered(broker, context, "w1", credits=2)
    await asyncio.sleep(0.1)
    tasks = [asyncio.create_task(broker.embed(MODEL, [str(i)])) for i in range(5)]
    first, second = await worker.receive_embed(), await worker.receive_embed()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(worker.receive_embed(), 0.3)
    assert broker.queue_depth(MODEL) == 3
    await worker.answer(first)
    third = await worker.receive_embed()
    for embed in (second, third):
        await worker.answer(embed)
    for _ in range(2):
        await worker.answer(await worker.receive_embed())
    await asyncio.gather(*tasks)
    await broker.stop()


@run
async def test_requests_of_a_lost_worker_are_retried_on_another(tmp_path: Path, context: zmq.asyncio.Context) -> None:
    broker = await _broker(tmp_path, context)
    silent = await registered(broker, context, "silent", credits=1)
    await asyncio.sleep(0.1)
    pending = asyncio.create_task(broker.embed(MODEL, ["retry me"]))
    await silent.receive_embed()  # taken, never answered
    silent.fall_silent()
    healthy = await registered(broker, context, "healthy")
    embed = await asyncio.wait_for(healthy.receive_embed(), 3)
    assert embed.texts == ["retry me"]
    await healthy.answer(embed, 2.0)
    assert np.allclose((await pending).vectors, 2.0)
    assert broker.counters[MODEL].retried == 1
    await broker.stop()


@run
async def test_a_reply_from_a_worker_the_request_is_not_recorded_on_is_dropped(tmp_path: Path,
                                                                               context: zmq.asyncio.Context) -> None:
    broker = await _broker(tmp_path, context)
    owner = FakeWorker(context, broker._settings.worker_bind_address, "owner", credits=1)
    other = FakeWorker(context, broker._settings.worker_bind_address, "other", credits=1)
    await owner.register()
    await asyncio.sleep(0.1)
    pending = asyncio.create_task(broker.embed(MODEL, ["x"]))
    embed = await owner.receive_embed()
    await other.register()
    await other.answer(embed, 9.0)  # forged or late: must not resolve the request
    await asyncio.sleep(0.1)
    assert not pending.done()
    await owner.answer(embed, 1.0)
    assert np.allclose((await pending).vectors, 1.0)
    await broker.stop()


@run
async def test_a_model_without_workers_answers_503_after_the_wait(tmp_path: Path, context: zmq.asyncio.Context) -> None:
    broker = await _broker(tmp_path, context)
    with pytest.raises(Unavailable, match="WORKER_WAIT_SECONDS"):
        await broker.embed(MODEL, ["nobody home"])
    await broker.stop()


@run
async def test_a_full_queue_answers_429_at_once(tmp_path: Path, context: zmq.asyncio.Context) -> None:
    broker = await _broker(tmp_path, context, MAX_QUEUE_PER_MODEL="2", WORKER_WAIT_SECONDS="5")
    waiting = [asyncio.create_task(broker.embed(MODEL, [str(i)])) for i in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(Overloaded):
        await broker.embed(MODEL, ["one too many"])
    for task in waiting:
        task.cancel()
    await broker.stop()


@run
async def test_a_request_past_its_deadline_gets_504_and_the_worker_a_cancel(tmp_path: Path, context: zmq.asyncio.Context) -> None:
    broker = await _broker(tmp_path, context, REQUEST_TIMEOUT_SECONDS="0.3")
    worker = await registered(broker, context, "slow")
    await asyncio.sleep(0.1)
    pending = asyncio.create_task(broker.embed(MODEL, ["slow"]))
    embed = await worker.receive_embed()
    with pytest.raises(GatewayTimeout, match="REQUEST_TIMEOUT_SECONDS"):
        await pending
    while True:
        message = await worker.receive()
        if isinstance(message, Cancel):
            assert message.request_id == embed.request_id
            break
    await broker.stop()


@run
async def test_an_unknown_peer_is_told_to_register_again(tmp_path: Path, context: zmq.asyncio.Context) -> None:
    broker = await _broker(tmp_path, context)
    stranger = FakeWorker(context, broker._settings.worker_bind_address, "stranger")
    await stranger.socket.send_multipart(encode(Cancel(request_id=1)))
    assert isinstance(await stranger.receive(), Reregister)
    await broker.stop()
