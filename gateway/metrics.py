"""Prometheus metrics of the whole service, gathered in the gateway.

The gateway is the one process that sees everything: HTTP requests (the middleware in request_metrics.py),
the cache (EmbeddingService), the workers (the broker: READY, RESULTS with token counts and the sizes of the
llama.cpp calls, losses) and the writer (acknowledged and unacknowledged rows). So one registry per app, with
a collector that reads those counters when scraped, needs no shared value files. With GATEWAY_PROCESSES > 1
each gateway counts its own share and the one scraped merges the others' (gateway/metrics_merge.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from starlette.requests import Request

from gateway.metrics_merge import merged_exposition, save_snapshot, sibling_snapshots
from gateway.readiness import writer_alive
from gateway.state import Services

PREFIX = "llama_embeddings"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class GatewayMetrics:
    """The app's registry: request instruments updated as requests finish, the rest read when scraped.

    `shared_dir`, `index` and `processes` say where gateway process `index` of `processes` meets the others'
    samples (gateway/metrics_merge.py); with one process there is nothing to merge."""

    def __init__(self, shared_dir: Path | None = None, index: int = 0, processes: int = 1) -> None:
        self._shared_dir = shared_dir
        self._index = index
        self._processes = processes
        self.registry = CollectorRegistry()
        self.requests = Counter(f"{PREFIX}_http_requests", "HTTP requests by endpoint (route path), method and status",
                                ["endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram(f"{PREFIX}_http_request_duration_seconds",
                                 "Time from request to the end of the response, by endpoint and method",
                                 ["endpoint", "method"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self._collector: ServiceCollector | None = None
        # The labelled children per (endpoint, method, status): `labels()` takes a lock and builds its key on
        # every call. Bounded: endpoints are route templates (request_metrics.py), statuses a few dozen.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """Count one finished request and record how long it took, under its route's path template."""
        key = (endpoint, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self.requests.labels(endpoint, method, str(status)),
                                               self.latency.labels(endpoint, method))
        children[0].inc()
        children[1].observe(seconds)

    def watch(self, services: Services) -> None:
        """Expose the counters of the broker, the embedding service and the writer link (once they exist)."""
        if self._collector is not None:  # a second lifespan (tests) replaces the first one's services
            self.registry.unregister(self._collector)
        self._collector = ServiceCollector(services)
        self.registry.register(self._collector)

    def exposition(self) -> bytes:
        """Every metric of the instance in Prometheus' text format: this gateway's read now, the others' merged."""
        if self._shared_dir is None or self._processes == 1:
            return generate_latest(self.registry)
        return merged_exposition(self.registry, sibling_snapshots(self._shared_dir, self._index, self._processes))

    def share(self) -> None:
        """Leave this gateway's samples for the others to merge (blocking; nothing to do with one process)."""
        if self._shared_dir is not None and self._processes > 1:
            save_snapshot(self._shared_dir, self._index, self.registry)


def metrics_of(request: Request) -> GatewayMetrics:
    """The GatewayMetrics of the app serving `request`."""
    return request.app.state.metrics


class ServiceCollector(Collector):
    """Reads the gateway's own counters at scrape time, so nothing is counted twice or kept in sync."""

    def __init__(self, services: Services) -> None:
        self._services = services

    def collect(self) -> Iterable[Metric]:
        """The cache, per-model worker and writer metrics, from the counters as they stand at this scrape."""
        yield from self._cache()
        yield from self._models()
        yield from self._writer()

    def _cache(self) -> Iterable[Metric]:
        counters = self._services.embeddings.counters
        yield CounterMetricFamily(f"{PREFIX}_cache_hits", "Inputs answered from the LRU or the database without a worker",
                                  counters.cache_hits)
        yield CounterMetricFamily(f"{PREFIX}_cache_misses", "Inputs sent to a worker", counters.cache_misses)
        yield CounterMetricFamily(f"{PREFIX}_deduplicated", "Inputs that awaited an identical one already computing",
                                  counters.deduplicated)
        yield CounterMetricFamily(f"{PREFIX}_store_unavailable", "Cache lookups the database did not answer (computed instead)",
                                  counters.store_unavailable)
        yield CounterMetricFamily(f"{PREFIX}_store_lookups_skipped",
                                  "Cache misses not looked up in the database: their hash was never stored",
                                  counters.store_lookups_skipped)

    def _models(self) -> Iterable[Metric]:
        broker = self._services.broker
        models = sorted(set(self._services.embeddings.models.served()) | set(broker.counters))
        families = {
            "requests": CounterMetricFamily(f"{PREFIX}_worker_requests", "Requests queued for workers", labels=["model"]),
            "texts": CounterMetricFamily(f"{PREFIX}_worker_inputs", "Inputs queued for workers", labels=["model"]),
            "tokens": CounterMetricFamily(f"{PREFIX}_tokens_embedded", "Tokens embedded by workers", labels=["model"]),
            "retried": CounterMetricFamily(f"{PREFIX}_requests_retried",
                                           "Requests put back in the queue because their worker was lost",
                                           labels=["model"]),
            "failed": CounterMetricFamily(f"{PREFIX}_requests_failed",
                                          "Requests failed with 503: worker lost twice or none within WORKER_WAIT_SECONDS",
                                          labels=["model"]),
            "workers_registered": CounterMetricFamily(
                f"{PREFIX}_workers_registered", "Workers that registered (start, restart after a loss, scale up)",
                labels=["model"]),
            "workers_lost": CounterMetricFamily(
                f"{PREFIX}_workers_lost", "Workers lost without saying BYE (crash, kill, missed heartbeats); "
                "the supervisor restarts each", labels=["model"]),
            "workers_left": CounterMetricFamily(f"{PREFIX}_workers_left", "Workers that left after BYE (scale down)",
                                                labels=["model"]),
        }
        live = GaugeMetricFamily(f"{PREFIX}_live_workers", "Registered workers not leaving", labels=["model"])
        queued = GaugeMetricFamily(f"{PREFIX}_queue_depth", "Requests waiting for a worker", labels=["model"])
        batches = HistogramMetricFamily(f"{PREFIX}_batch_size", "Sequences per llama.cpp call in the workers",
                                        labels=["model"])
        for model in models:
            counters = broker.counters.get(model)
            for name, family in families.items():
                family.add_metric([model], getattr(counters, name) if counters else 0)
            live.add_metric([model], len(broker.live_workers(model)))
            queued.add_metric([model], broker.queue_depth(model))
            sizes = counters.batch_sizes if counters else {}
            batches.add_metric([model], _cumulative_buckets(sizes), sum_value=sum(size * n for size, n in sizes.items()))
        yield from families.values()
        yield from (live, queued, batches)

    def _writer(self) -> Iterable[Metric]:
        writer = self._services.writer
        yield GaugeMetricFamily(f"{PREFIX}_writer_queue_rows",
                                "Rows computed and not yet acknowledged by the writer as committed (buffered or sent)",
                                writer.unacknowledged_rows)
        yield CounterMetricFamily(f"{PREFIX}_writer_committed_rows",
                                  "Rows the writer acknowledged as committed (since the gateway started)",
                                  writer.acknowledged_rows)
        yield GaugeMetricFamily(f"{PREFIX}_writer_up", "1 while the writer answers pings", int(writer_alive(self._services)))


def _cumulative_buckets(sizes: Mapping[int, int]) -> list[tuple[str, float]]:
    """Prometheus histogram buckets from {batch size: llama.cpp calls of that size}."""
    buckets = [(floatToGoString(bound), float(sum(n for size, n in sizes.items() if size <= bound)))
               for bound in BATCH_SIZE_BUCKETS]
    buckets.append(("+Inf", float(sum(sizes.values()))))
    return buckets
