"""The worker counts the operator set with `scale`, kept in DATA_DIR/scale.json across stop and start.

Only the operator's word is kept: a model loaded on demand (LOAD_ON_DEMAND) or unloaded when idle is not,
so a restart comes back to what the operator chose, not to the last request's side effects.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from shared.file_integrity import atomic_write_text

log = logging.getLogger(__name__)


def read_scale_state(path: Path) -> dict[str, int]:
    """The counts kept at `path` (model -> workers); empty when there are none or the file is unreadable."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return {}
    if not isinstance(raw, dict):
        log.warning("ignoring %s: not a JSON object", path)
        return {}
    return {str(model): int(count) for model, count in raw.items() if isinstance(count, int) and count >= 0}


def remember_scale(path: Path, model: str, count: int) -> None:
    """Keep `model`'s count at `path` (rewritten whole, atomically: it is a few lines)."""
    state = read_scale_state(path)
    state[model] = count
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(state, indent=2, sort_keys=True) + "\n")
