"""Logs: one file per role with the role in every line; rotated files go to old_logs/."""

from __future__ import annotations

import logging
from pathlib import Path

from shared import logs


def test_every_line_carries_the_role_and_rotated_files_move_to_old_logs(tmp_path: Path) -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    logs.configure_logging("writer", tmp_path, "INFO")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logs.RotatingFileHandler)
    handler.maxBytes = 2_000
    for i in range(200):
        logging.getLogger("test").info("line %d", i)
    handler.flush()
    live = (tmp_path / "writer.log").read_text()
    assert all("[writer]" in line for line in live.splitlines())
    rotated = sorted((tmp_path / "old_logs").glob("writer.log.*"))
    assert 1 <= len(rotated) <= logs.BACKUP_COUNT
    handler.close()
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
