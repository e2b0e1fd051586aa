"""The gateway's stored-vector reader: one thread, one connection, one query for every caller waiting at once."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

import numpy as np
import pytest

from gateway.stored_vectors import DatabaseConnection, StoredVectorReader, StoredVectorsClosed
from shared.schema import embeddings, metadata, sqlite_engine

MODEL = "model-a"
T = TypeVar("T")
PATIENCE = 10.0  # seconds: far longer than any answer takes, so a hang fails the test instead of stalling it


def store(path: Path, rows: dict[tuple[str, str], np.ndarray]) -> None:
    """Writes rows the way the writer does: the shared schema, float32 bytes."""
    engine = sqlite_engine(path)
    metadata.create_all(engine)
    with engine.begin() as connection:
        for (model, text_hash), vector in rows.items():
            connection.execute(embeddings.insert().values(
                text=f"text of {text_hash}", text_hash=text_hash, model_name=model, embedding=vector.tobytes(),
                dimensions=int(vector.shape[0])))
    engine.dispose()


def read_only(path: Path) -> Callable[[], DatabaseConnection]:
    """The connection the gateway uses: read-only, with the shared pragmas."""
    return sqlite_engine(path, read_only=True).raw_connection


class GatedConnection:
    """Counts queries, and holds the first one until `release` is set, so that callers pile up behind it."""

    def __init__(self, connection: DatabaseConnection) -> None:
        self._connection = connection
        self.queries = 0
        self.querying = threading.Event()
        self.release = threading.Event()

    def cursor(self) -> Any:
        gate = self
        cursor = self._connection.cursor()

        class Cursor:
            def execute(self, sql: str, parameters: list[str]) -> Any:
                gate.queries += 1
                gate.querying.set()
                gate.release.wait(PATIENCE)
                return cursor.execute(sql, parameters)

            def __getattr__(self, name: str) -> Any:
                return getattr(cursor, name)

        return Cursor()

    def close(self) -> None:
        self._connection.close()


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(scenario(), PATIENCE)
    return asyncio.run(bounded())


async def until(event: threading.Event) -> None:
    await asyncio.to_thread(event.wait, PATIENCE)


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "embeddings.sqlite"
    store(path, {(MODEL, "h1"): np.array([1, 2], dtype=np.float32),
                 ("model-b", "h2"): np.array([3, 4], dtype=np.float32)})
    return path


def test_stored_hashes_are_found_and_others_are_left_out(database: Path) -> None:
    reader = StoredVectorReader(read_only(database))
    try:
        found = run(lambda: reader.read(MODEL, ["h1", "h2", "unknown"]))  # h2 is stored for another model only
    finally:
        reader.close()
    assert list(found) == ["h1"]
    assert found["h1"].tolist() == [1.0, 2.0]


def test_callers_waiting_at_once_are_answered_by_one_query(database: Path) -> None:
    gated = GatedConnection(read_only(database)())
    reader = StoredVectorReader(lambda: gated)

    async def scenario() -> list[dict[str, np.ndarray]]:
        first = asyncio.create_task(reader.read(MODEL, ["h1"]))
        await until(gated.querying)
        waiting = [asyncio.create_task(reader.read(MODEL, ["h1"] if number % 2 else [f"miss{number}"]))
                   for number in range(50)]
        await asyncio.sleep(0)  # every task queues its lookup on its first step
        gated.release.set()
        return await asyncio.gather(first, *waiting)

    try:
        answers = run(scenario)
    finally:
        reader.close()
    assert gated.queries == 2  # the first caller's, then one for the fifty that queued behind it
    assert [list(answer) for answer in answers[1:]] == [["h1"] if number % 2 else [] for number in range(50)]


def test_a_database_error_reaches_every_waiting_caller(tmp_path: Path) -> None:
    missing = tmp_path / "never-created.sqlite"
    reader = StoredVectorReader(read_only(missing))

    async def scenario() -> list[BaseException | dict[str, np.ndarray]]:
        return await asyncio.gather(*(reader.read(MODEL, [f"h{number}"]) for number in range(5)),
                                    return_exceptions=True)

    try:
        outcomes = run(scenario)
    finally:
        reader.close()
    assert len(outcomes) == 5
    assert all(isinstance(outcome, Exception) and "unable to open" in str(outcome) for outcome in outcomes)


def test_lookups_succeed_once_a_missing_database_appears(tmp_path: Path) -> None:
    path = tmp_path / "later.sqlite"
    reader = StoredVectorReader(read_only(path))
    try:
        with pytest.raises(Exception, match="unable to open"):
            run(lambda: reader.read(MODEL, ["h1"]))
        store(path, {(MODEL, "h1"): np.array([5, 6], dtype=np.float32)})
        found = run(lambda: reader.read(MODEL, ["h1"]))
    finally:
        reader.close()
    assert found["h1"].tolist() == [5.0, 6.0]


def test_close_finishes_the_query_in_progress_and_fails_the_queued_lookups(database: Path) -> None:
    gated = GatedConnection(read_only(database)())
    reader = StoredVectorReader(lambda: gated)

    async def scenario() -> tuple[Any, Any]:
        in_progress = asyncio.create_task(reader.read(MODEL, ["h1"]))
        await until(gated.querying)
        queued = asyncio.create_task(reader.read(MODEL, ["h1"]))
        await asyncio.sleep(0)
        closing = asyncio.create_task(asyncio.to_thread(reader.close))
        while not reader.closed:  # the stop mark is queued behind the second lookup
            await asyncio.sleep(0.01)
        gated.release.set()
        await closing
        return await asyncio.gather(in_progress, queued, return_exceptions=True)

    answered, failed = run(scenario)
    assert list(answered) == ["h1"]
    assert isinstance(failed, StoredVectorsClosed)


def test_reading_after_close_raises_at_once(database: Path) -> None:
    reader = StoredVectorReader(read_only(database))
    reader.close()
    reader.close()  # a second close is harmless
    with pytest.raises(StoredVectorsClosed):
        run(lambda: reader.read(MODEL, ["h1"]))
