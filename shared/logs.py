"""Logging as the original service did it: one rotating file per process role, rotated files in old_logs/."""

from __future__ import annotations

import logging
import sys
from logging.handlers import RotatingFileHandler
from pathlib import Path

MAX_BYTES = 10 * 1024 * 1024
BACKUP_COUNT = 5


class _OldLogsRotatingHandler(RotatingFileHandler):
    """Keeps the live file in the log folder and moves rotated ones to old_logs/ beside it."""

    def rotation_filename(self, default_name: str) -> str:
        path = Path(default_name)
        old = path.parent / "old_logs"
        old.mkdir(parents=True, exist_ok=True)
        return str(old / path.name)


def configure_logging(role: str, log_dir: Path, level: str = "INFO", *, to_stdout: bool = False) -> None:
    """Route the root logger to `<log_dir>/<file>.log` (and stdout in the foreground); `role` tags each line."""
    log_dir.mkdir(parents=True, exist_ok=True)
    formatter = logging.Formatter(f"%(asctime)s [{role}] %(levelname)s %(name)s: %(message)s")
    file_name = role.split(":")[0].replace("/", "_") + ".log"
    handlers: list[logging.Handler] = [
        _OldLogsRotatingHandler(log_dir / file_name, maxBytes=MAX_BYTES, backupCount=BACKUP_COUNT, encoding="utf-8")
    ]
    if to_stdout:
        handlers.append(logging.StreamHandler(sys.stdout))
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(level)
