"""PostgreSQL as the store (DATABASE_URL=postgresql+psycopg://...): the schema it gets, and a server restart
under load. The endpoint tests that run on both stores are marked BOTH_DATABASES in their own modules."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import UniqueConstraint, inspect

from shared.schema import database_engine, metadata
from tests.conftest import MINILM
from tests.harness import running
from tests.postgres import PostgresCluster
from tests.test_failures import stored_texts

pytestmark = pytest.mark.slow


def test_the_schema_is_created_at_first_start_with_the_same_tables_and_columns(
        tmp_path: Path, models_dir: Path, postgres: PostgresCluster) -> None:
    url = postgres.database()
    with running(tmp_path, models_dir, MODELS_TO_SERVE=MINILM, DATABASE_URL=url) as service:
        service.embed("a first row in PostgreSQL")
        engine = database_engine(url, read_only=True)
        try:
            found = inspect(engine)
            for table in metadata.sorted_tables:
                assert {c["name"] for c in found.get_columns(table.name)} == {c.name for c in table.columns}, table.name
                unique = {tuple(u["column_names"]) for u in found.get_unique_constraints(table.name)}
                assert {tuple(c.name for c in u.columns) for u in table.constraints
                        if isinstance(u, UniqueConstraint)} <= unique, table.name
        finally:
            engine.dispose()
        service.wait_for(lambda: "a first row in PostgreSQL" in stored_texts(service), timeout=10,
                         message="the row committed to PostgreSQL")


def test_the_log_names_the_database_without_its_password(tmp_path: Path, models_dir: Path,
                                                         postgres: PostgresCluster) -> None:
    url = postgres.database().replace("postgres@", "postgres:not-shown@")  # trust auth ignores the password
    with running(tmp_path, models_dir, MODELS_TO_SERVE=MINILM, DATABASE_URL=url) as service:
        service.embed("logged without a password")
        log = (service.data_dir / "logs" / "writer.log").read_text()
    assert "postgres:***@" in log and "not-shown" not in log


def test_a_postgresql_restart_under_load_loses_nothing_and_answers_no_500(
        tmp_path: Path, models_dir: Path, postgres: PostgresCluster) -> None:
    url = postgres.database()
    texts = [f"sentence {i} sent while PostgreSQL restarts" for i in range(400)]
    with running(tmp_path, models_dir, MODELS_TO_SERVE=MINILM, DATABASE_URL=url) as service:
        service.embed("warm up before the restart")
        def restart() -> None:
            # Stopped for 1.5 s rather than `pg_ctl restart` (a fraction of a second): requests surely meet it down.
            time.sleep(0.5)
            postgres.stop_server()
            time.sleep(1.5)
            postgres.start_server()

        restarter = threading.Thread(target=restart)

        async def load() -> list[httpx.Response | Exception]:
            limits = httpx.Limits(max_connections=16)
            async with httpx.AsyncClient(base_url=service.base_url, timeout=60, limits=limits) as client:
                async def one(index: int, text: str) -> httpx.Response | Exception:
                    await asyncio.sleep(index * 0.01)  # spread over about four seconds, across the restart
                    try:
                        if index % 4 == 3:  # reads that need the database itself
                            return await client.get("/get_all_stored_strings/", params={"limit": 5})
                        return await client.post("/get_embedding_vector/", json={"text": text})
                    except httpx.HTTPError as exc:
                        return exc
                return await asyncio.gather(*(one(i, t) for i, t in enumerate(texts)))

        restarter.start()
        results = asyncio.run(load())
        restarter.join()
        statuses = [r.status_code if isinstance(r, httpx.Response) else repr(r) for r in results]
        assert set(statuses) <= {200, 503}, statuses
        unavailable = [r for r in results if isinstance(r, httpx.Response) and r.status_code == 503]
        assert unavailable, "no read met the database down"
        assert all(r.headers.get("Retry-After") and "database" in r.json()["detail"] for r in unavailable)
        answered = {text for i, (text, r) in enumerate(zip(texts, results))
                    if i % 4 != 3 and isinstance(r, httpx.Response) and r.status_code == 200}
        assert len(answered) == len(texts) * 3 // 4  # embedding does not need the database to answer
        service.wait_for(lambda: answered <= stored_texts(service), timeout=30,
                         message="every answered text in PostgreSQL after its restart")
