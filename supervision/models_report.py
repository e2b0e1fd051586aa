"""The answer to the `models` control command (GET /admin/models and the console): every installed model with
its state and workers, the instance's cache counters and queue depths, the pulls, and the memory figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psutil

from modelstore.catalogue import Catalogue

WORKER_FIELDS = ("slot", "pid", "state", "threads", "rss_bytes", "requests", "texts", "restarts", "last_exit")


def model_state(desired: int, failed_reason: str, workers: list[dict[str, Any]]) -> str:
    """"failed", "stopped" (0 workers wanted), "serving" (a worker is ready) or "loading"."""
    if failed_reason:
        return "failed"
    if desired == 0:
        return "stopped" if not workers else "stopping"
    return "serving" if any(w["state"] == "ready" for w in workers) else "loading"


def models_report(status: dict[str, Any], catalogue: Catalogue, models_dir: Path, on_demand: list[str], queues: dict[str, int],
                  pulls: list[dict[str, Any]], reserve_bytes: int) -> dict[str, Any]:
    """`status` (Supervisor.status()) regrouped by model, with what the catalogue says of each."""
    rows = status["processes"]
    models = []
    for name, desired in sorted(status["desired"].items()):
        workers = [{key: row[key] for key in WORKER_FIELDS}
                   for row in sorted(rows, key=lambda r: r["slot"]) if row["role"] == "worker" and row["model"] == name]
        reason = status["failed_models"].get(name, "")
        entry = catalogue.entries.get(name)
        models.append({
            "name": name, "installed": True, "served": desired > 0, "desired": desired, "on_demand": name in on_demand,
            "state": model_state(desired, reason, workers), "reason": reason,
            "size_bytes": _file_size(entry.installed_path(models_dir)) if entry else 0,
            "dimensions": entry.dimensions if entry else 0,
            "pooling": entry.pooling if entry else "", "queue_depth": queues.get(name, 0), "workers": workers})
    gateways = [row for row in rows if row["role"] == "gateway"]
    return {"models": models,
            "cache": {"hits": sum(row["counters"].get("cache_hits", 0) for row in gateways),
                      "misses": sum(row["counters"].get("cache_misses", 0) for row in gateways)},
            "pulls": pulls,
            "memory": {"available_bytes": psutil.virtual_memory().available, "reserve_bytes": reserve_bytes}}


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
