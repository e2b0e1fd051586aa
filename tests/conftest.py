"""Shared fixtures: the default models, prepared once, and the real service started in a temporary directory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from tests.child_object import ChildObject
from tests.harness import PROJECT_ROOT, Service, running
from tests.postgres import PostgresCluster, server_binaries

MINILM = "all-minilm-l6-v2"
SMOLLM = "smollm2-135m-instruct"
# A module whose tests must hold on either store says so with
#     pytestmark = BOTH_DATABASES
# and every service its tests start runs once on SQLite and once on PostgreSQL.
BOTH_DATABASES = pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True, scope="module")


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """Both default models, installed the way `start` installs them, kept between runs."""
    from modelstore.catalogue import load_catalogue
    from modelstore.install import ensure_installed

    path = Path(os.environ.get("LES_TEST_MODELS_DIR", PROJECT_ROOT / "data" / "test-models"))
    path.mkdir(parents=True, exist_ok=True)
    ensure_installed([MINILM, SMOLLM], path, load_catalogue(path))
    return path


@pytest.fixture(scope="session")
def minilm_source_dir(models_dir: Path) -> Path:
    """The sentence-transformers folder the MiniLM GGUF was converted from (the reference weights)."""
    from modelstore.catalogue import load_catalogue
    from modelstore.install import source_dir

    return source_dir(load_catalogue(models_dir)[MINILM], models_dir)


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm_source_dir: Path) -> Any:
    """MiniLM's tokenizer from the files it was converted from, untruncated: ids the service did not produce, as
    a client that sends token ids would make them."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(minilm_source_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def _embed_texts(engine: Any, texts: list[str]) -> np.ndarray:
    """Run in the reference engine's child process (ChildObject.apply)."""
    return engine.embed([engine.tokenize(text) for text in texts])


class ReferenceEngine:
    """MiniLM in our engine in a child process, outside any service: vectors no service cache can have answered."""

    def __init__(self, models_dir: Path) -> None:
        from modelstore.catalogue import load_catalogue
        from workers.embedder.engine import Engine, EngineConfig

        entry = load_catalogue(models_dir)[MINILM]
        self._child = ChildObject(Engine, EngineConfig(str(entry.installed_path(models_dir)), entry.pooling,
                                                       entry.max_tokens, threads=1, token_budget=entry.batch_tokens,
                                                       flash_attention=entry.flash_attention))

    def embed(self, texts: list[str]) -> np.ndarray:
        return self._child.apply(_embed_texts, texts)

    def close(self) -> None:
        self._child.call("close")
        self._child.close()


@pytest.fixture(scope="session")
def minilm_reference(models_dir: Path) -> Iterator[ReferenceEngine]:
    engine = ReferenceEngine(models_dir)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One throw-away PostgreSQL server for the session (Debian's `postgresql`, installed by scripts/setup.sh)."""
    binaries = server_binaries()
    if binaries is None:
        pytest.fail("no PostgreSQL server binaries under /usr/lib/postgresql (scripts/setup.sh --test installs them)")
    cluster = PostgresCluster(binaries).start()
    yield cluster
    cluster.close()


@dataclass(frozen=True)
class Store:
    """Which store the services of a test get: `env()` is a new, empty one's settings on every call."""

    kind: str  # "sqlite" or "postgresql"
    cluster: PostgresCluster | None = None

    def env(self) -> dict[str, str]:
        if self.cluster is None:
            return {}  # SQLite: the file under each service's own DATA_DIR
        return {"DATABASE_URL": self.cluster.database()}


@pytest.fixture(scope="module")
def database(request: pytest.FixtureRequest) -> Store:
    """SQLite, unless the module is marked BOTH_DATABASES: then its tests run once more on PostgreSQL."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return Store("sqlite")
    return Store("postgresql", request.getfixturevalue("postgres"))


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, database: Store) -> Iterator[Service]:
    """Both default models, one worker each: shared by the read-mostly tests of a module."""
    with running(tmp_path_factory.mktemp("service"), models_dir, **database.env()) as started:
        yield started


@pytest.fixture
def minilm_service(tmp_path_factory: pytest.TempPathFactory, models_dir: Path,
                   database: Store) -> Iterator[Service]:
    """The default model alone, for tests that scale, kill or stop processes."""
    with running(tmp_path_factory.mktemp("service"), models_dir, MODELS_TO_SERVE=MINILM, **database.env()) as started:
        yield started


@pytest.fixture(scope="module")
def minilm_module(tmp_path_factory: pytest.TempPathFactory, models_dir: Path,
                  database: Store) -> Iterator[Service]:
    """The default model alone, shared by the tests of a module that do not disturb its processes."""
    with running(tmp_path_factory.mktemp("service"), models_dir, MODELS_TO_SERVE=MINILM, **database.env()) as started:
        yield started
