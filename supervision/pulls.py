"""Model pulls the admin API started: each one `supervisor.py models pull` in a child process of its own.

A child, not a thread, so a download or conversion that crashes or hangs cannot take the supervisor's loop
with it; its output goes to logs/pull-<n>.log and its last line is the pull's message. Progress is the
size of the file being written (download.part_path) against the size the catalogue or the server gave.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelstore.catalogue import load_catalogue
from modelstore.download import is_url, part_path, url_file_name
from shared.settings import PROJECT_ROOT, Settings


@dataclass
class Pull:
    """One pull: what was asked for, its process and log, and how it ended."""

    number: int
    target: str  # a catalogue name or a URL
    name: str  # the model's name once installed ("" : the catalogue's, or the URL's file name)
    process: subprocess.Popen[bytes]
    log_path: Path
    destination: Path | None  # the file being written, when known beforehand
    total_bytes: int = 0
    state: str = "running"
    message: str = field(default="")
    installed_bytes: int = 0  # the model file's size once installed

    def report(self) -> dict[str, Any]:
        """The pull as GET /admin/models lists it."""
        written = self.installed_bytes if self.state == "done" else self._bytes_written()
        return {"number": self.number, "target": self.target, "name": self.name, "state": self.state,
                "bytes": written, "total_bytes": self.total_bytes or self.installed_bytes, "message": self.message}

    def _bytes_written(self) -> int:
        if self.destination is None:
            return 0
        for path in (self.destination, part_path(self.destination)):
            if path.is_file():
                return path.stat().st_size
        return 0


class Pulls:
    """Starts pulls and notices how they end; `reports()` for the admin API."""

    def __init__(self, settings: Settings, env: dict[str, str]) -> None:
        self._settings = settings
        self._env = env
        self._pulls: list[Pull] = []

    def start(self, target: str, name: str = "") -> Pull:
        """Start pulling `target` (a catalogue name or an http(s) URL of a .gguf file) as model `name`."""
        target = target.strip()
        if not target:
            raise ValueError("say what to pull: a catalogue name or the URL of a .gguf file")
        if any(p.state == "running" and p.target == target for p in self._pulls):
            raise ValueError(f"{target!r} is being pulled already")
        destination, total = self._destination(target, name)
        number = len(self._pulls) + 1
        self._settings.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self._settings.log_dir / f"pull-{number}.log"
        argv = [sys.executable, str(PROJECT_ROOT / "supervisor.py"), "models", "pull", target]
        if name:
            argv += ["--name", name]
        with log_path.open("ab") as out:
            process = subprocess.Popen(argv, cwd=PROJECT_ROOT, env=self._env, stdin=subprocess.DEVNULL,
                                       stdout=out, stderr=out, start_new_session=True)
        pull = Pull(number, target, name, process, log_path, destination, total)
        self._pulls.append(pull)
        return pull

    def _destination(self, target: str, name: str) -> tuple[Path | None, int]:
        models_dir = self._settings.models_dir
        if is_url(target):
            return models_dir / "downloads" / url_file_name(target), 0
        catalogue = load_catalogue(models_dir)
        entry = catalogue[target]  # UnknownModelError (a KeyError) names it
        return entry.installed_path(models_dir), entry.size_bytes

    def poll(self) -> None:
        """Note the pulls that ended since, with the last line of their output as the message."""
        for pull in self._pulls:
            if pull.state != "running":
                continue
            code = pull.process.poll()
            if code is None:
                continue
            pull.state = "done" if code == 0 else "failed"
            pull.message = _last_line(pull.log_path) or f"exit status {code}"
            if code == 0:
                pull.installed_bytes = self._installed_size(pull)

    def _installed_size(self, pull: Pull) -> int:
        """The size of the model file a finished pull installed (a URL's download is removed once imported)."""
        name = pull.name or (Path(url_file_name(pull.target)).stem.lower() if is_url(pull.target) else pull.target)
        catalogue = load_catalogue(self._settings.models_dir)
        if name not in catalogue:
            return 0
        path = catalogue[name].installed_path(self._settings.models_dir)
        return path.stat().st_size if path.is_file() else 0

    def reports(self) -> list[dict[str, Any]]:
        """Every pull of this run, oldest first."""
        self.poll()
        return [pull.report() for pull in self._pulls]

    def stop(self) -> None:
        """End pulls still running (the supervisor is stopping); a later pull resumes the download."""
        for pull in self._pulls:
            if pull.process.poll() is None:
                pull.process.terminate()


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:500] if lines else ""
