"""Which model file a process really has mapped, read from the kernel (/proc/<pid>/maps).

A worker reports the path it was given; the kernel's table is the truth (after a RAM disk is cleared, an
old mapping would show up here as a file that no longer exists).
"""

from __future__ import annotations

from pathlib import Path

MODEL_SUFFIX = ".gguf"
_DELETED = " (deleted)"


def mapped_files(pid: int, suffix: str = MODEL_SUFFIX) -> list[str]:
    """Distinct paths of files ending in `suffix` that `pid` has mapped, in address order; [] if unreadable."""
    try:
        lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    except OSError:  # gone, or not ours to read
        return []
    paths: list[str] = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 6:
            continue  # anonymous memory
        path = fields[5]
        name = path[: -len(_DELETED)] if path.endswith(_DELETED) else path
        if name.endswith(suffix) and path not in paths:
            paths.append(path)
    return paths


def maps_under(pid: int, directory: Path) -> bool:
    """True if `pid` has any file under `directory` mapped (a tmpfs cannot be unmounted while it does)."""
    prefix = f"{directory}/"
    return any(path.startswith(prefix) for path in mapped_files(pid, suffix=""))
