"""`/metrics` for the whole instance when GATEWAY_PROCESSES > 1: every gateway's samples, merged.

Each gateway process counts what passes through it (gateway/metrics.py). Every second each one leaves a
snapshot of its samples in `run/metrics/gateway-<index>.msgpack`; the one that answers a scrape merges the
fresh snapshots of the others with its own live samples. Counters and histograms add up; so do the gauges of
things each gateway holds itself (queue depth, rows awaiting the writer). Gauges of facts every gateway sees
alike are not added: live workers (each gateway has every worker registered) take the largest, `writer_up`
the smallest (the writer is up when every gateway hears it). A `_created` sample keeps the earliest time.
Snapshots older than STALE_SECONDS (a gateway that died) are left out: a scrape then sees the totals of the
gateways alive, and a counter may step back, which Prometheus' rate() takes as a counter reset.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import msgpack
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from shared.file_integrity import atomic_write_bytes

STALE_SECONDS = 5.0
_LARGEST = {"llama_embeddings_live_workers"}
_SMALLEST = {"llama_embeddings_writer_up"}
Snapshot = list[tuple[str, str, str, list[tuple[str, dict[str, str], float]]]]  # name, type, help, samples


def snapshot(registry: CollectorRegistry) -> Snapshot:
    """The registry's samples now, as plain data."""
    return [(family.name, family.type, family.documentation,
             [(sample.name, dict(sample.labels), float(sample.value)) for sample in family.samples])
            for family in registry.collect()]


def snapshot_path(directory: Path, index: int) -> Path:
    """Where gateway process `index` leaves its snapshot."""
    return directory / f"gateway-{index}.msgpack"


def save_snapshot(directory: Path, index: int, registry: CollectorRegistry) -> None:
    """Leave this gateway's samples for the others to merge (blocking: call it off the event loop)."""
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(snapshot_path(directory, index), msgpack.packb(snapshot(registry)))


def sibling_snapshots(directory: Path, index: int, processes: int) -> list[Snapshot]:
    """The fresh snapshots of the other gateway processes of this instance."""
    found = []
    for other in range(processes):
        path = snapshot_path(directory, other)
        try:
            if other == index or time.time() - path.stat().st_mtime > STALE_SECONDS:
                continue
            found.append(msgpack.unpackb(path.read_bytes()))
        except (OSError, ValueError):  # gone, or caught mid-replace on a file system without atomic rename
            continue
    return found


def merged_exposition(own: CollectorRegistry, others: list[Snapshot]) -> bytes:
    """Prometheus' text format of this gateway's samples merged with the others'."""
    registry = CollectorRegistry()
    registry.register(_Merged([snapshot(own), *others]))
    return generate_latest(registry)


class _Merged(Collector):
    def __init__(self, snapshots: list[Snapshot]) -> None:
        self._snapshots = snapshots

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for taken in self._snapshots:
            for name, kind, documentation, samples in taken:
                if name not in families:
                    families[name] = Metric(name, documentation, kind)
                    values[name] = {}
                merged = values[name]
                for sample_name, labels, value in samples:
                    key = (sample_name, tuple(sorted(labels.items())))
                    merged[key] = value if key not in merged else _combine(name, sample_name, merged[key], value)
        for name, family in families.items():
            for (sample_name, label_pairs), value in values[name].items():
                family.add_sample(sample_name, dict(label_pairs), value)
            yield family


def _combine(family: str, sample: str, first: float, second: float) -> float:
    if sample.endswith("_created"):
        return min(first, second)
    if family in _LARGEST:
        return max(first, second)
    if family in _SMALLEST:
        return min(first, second)
    return first + second
