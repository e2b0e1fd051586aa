"""The catalogue of models this service knows by name (catalogue.toml beside this file).

An installed model is a GGUF file named by its entry under MODELS_DIR; `installed_path` says where it goes and
`is_installed` whether it is there. Models imported by the operator (`models import PATH`) are added to a
catalogue of their own in MODELS_DIR so that the shipped file stays read-only.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shared.file_integrity import atomic_write_text

SHIPPED_CATALOGUE = Path(__file__).with_name("catalogue.toml")
LOCAL_CATALOGUE_NAME = "imported.toml"

Pooling = Literal["mean", "cls", "last"]


class UnknownModelError(KeyError):
    """A model name that no catalogue lists."""

    def __str__(self) -> str:
        return f"unknown model {self.args[0]!r}"


@dataclass(frozen=True)
class ModelEntry:
    """One catalogue entry; see catalogue.toml for the meaning of each field."""

    name: str
    description: str
    source: Literal["pypi", "url", "local"]
    format: Literal["gguf", "sentence-transformers"]
    file: str
    pooling: Pooling
    dimensions: int
    max_tokens: int
    batch_tokens: int = 256
    flash_attention: bool = False
    size_bytes: int = 0
    sha256: str = ""
    url: str = ""
    package: str = ""
    version: str = ""
    package_sha256: str = ""
    member: str = ""
    source_sha256: str = ""

    def installed_path(self, models_dir: Path) -> Path:
        """Where the model's GGUF file is under `models_dir` once installed (whether or not it is there now)."""
        return models_dir / self.file

    def is_installed(self, models_dir: Path) -> bool:
        """True when the model's GGUF file is in `models_dir`."""
        return self.installed_path(models_dir).is_file()


@dataclass(frozen=True)
class Catalogue:
    """Every model known by name: the shipped catalogue's entries and the operator's imported ones."""

    entries: dict[str, ModelEntry]

    def __getitem__(self, name: str) -> ModelEntry:
        try:
            return self.entries[name]
        except KeyError:
            raise UnknownModelError(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def names(self) -> list[str]:
        """The names of every catalogued model, sorted."""
        return sorted(self.entries)

    def installed(self, models_dir: Path) -> list[ModelEntry]:
        """The entries whose GGUF file is in `models_dir`, in name order."""
        return [entry for _, entry in sorted(self.entries.items()) if entry.is_installed(models_dir)]


def load_catalogue(models_dir: Path) -> Catalogue:
    """The shipped catalogue plus the operator's imported models (which may not shadow shipped names)."""
    entries = _read(SHIPPED_CATALOGUE)
    local = models_dir / LOCAL_CATALOGUE_NAME
    if local.is_file():
        for name, entry in _read(local).items():
            entries.setdefault(name, entry)
    return Catalogue(entries)


def add_local_entry(models_dir: Path, entry: ModelEntry) -> None:
    """Record an imported model in MODELS_DIR/imported.toml (rewritten whole: it is small)."""
    path = models_dir / LOCAL_CATALOGUE_NAME
    existing = _read(path) if path.is_file() else {}
    existing[entry.name] = entry
    lines: list[str] = []
    for name, item in sorted(existing.items()):
        lines.append(f'[models."{name}"]')
        for key, value in vars(item).items():
            if key == "name" or value in ("", 0):
                continue
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    atomic_write_text(path, "\n".join(lines))


def _toml_value(value: object) -> str:
    if isinstance(value, bool):  # before int: a bool is an int, and TOML spells it in lower case
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _read(path: Path) -> dict[str, ModelEntry]:
    with path.open("rb") as handle:
        data = tomllib.load(handle)
    return {name: ModelEntry(name=name, **fields) for name, fields in data.get("models", {}).items()}
