"""Shared fixtures: the default models, prepared once, and the real service started in a temporary directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from tests.harness import PROJECT_ROOT, Service, running

MINILM = "all-minilm-l6-v2"
SMOLLM = "smollm2-135m-instruct"


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


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Service]:
    """Both default models, one worker each: shared by the read-mostly tests of a module."""
    with running(tmp_path_factory.mktemp("service"), models_dir) as started:
        yield started


@pytest.fixture
def minilm_service(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Service]:
    """The default model alone, for tests that scale, kill or stop processes."""
    with running(tmp_path_factory.mktemp("service"), models_dir, MODELS_TO_SERVE=MINILM) as started:
        yield started


@pytest.fixture(scope="module")
def minilm_module(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Service]:
    """The default model alone, shared by the tests of a module that do not disturb its processes."""
    with running(tmp_path_factory.mktemp("service"), models_dir, MODELS_TO_SERVE=MINILM) as started:
        yield started
