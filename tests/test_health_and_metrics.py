"""/health, /ready and /metrics on the real system with all-MiniLM-L6-v2."""

from __future__ import annotations

import os
import signal
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import MINILM
from tests.harness import Service

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(service: Service) -> Samples:
    response = httpx.get(f"{service.base_url}/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def embed(service: Service, texts: list[str]) -> dict[str, Any]:
    response = httpx.post(f"{service.base_url}/v1/embeddings", json={"input": texts, "model": MINILM}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def ready(service: Service) -> httpx.Response:
    return httpx.get(f"{service.base_url}/ready")


def test_health_answers_200_while_the_gateway_is_up(minilm_module: Service) -> None:
    response = httpx.get(f"{minilm_module.base_url}/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_ready_answers_200_when_every_model_has_a_worker_and_the_writer_answers(minilm_module: Service) -> None:
    response = ready(minilm_module)
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "reasons": [], "live_workers": {MINILM: 1}, "writer_alive": True}


def test_requests_are_counted_by_endpoint_and_status_and_timed(minilm_module: Service) -> None:
    before = scrape(minilm_module)
    embed(minilm_module, ["counted request"])
    httpx.post(f"{minilm_module.base_url}/v1/embeddings", json={"input": "x", "model": "nope"})
    after = scrape(minilm_module)
    requests = "llama_embeddings_http_requests_total"
    for status, increase in (("200", 1), ("404", 1)):
        labels = {"endpoint": "/v1/embeddings", "method": "POST", "status": status}
        assert value(after, requests, **labels) - value(before, requests, **labels) == increase
    timed = "llama_embeddings_http_request_duration_seconds_count"
    assert value(after, timed, endpoint="/v1/embeddings", method="POST") - \
        value(before, timed, endpoint="/v1/embeddings", method="POST") == 2


def test_unknown_paths_share_one_label(minilm_module: Service) -> None:
    httpx.get(f"{minilm_module.base_url}/no/such/path/1")
    httpx.get(f"{minilm_module.base_url}/no/such/path/2")
    samples = scrape(minilm_module)
    assert value(samples, "llama_embeddings_http_requests_total", endpoint="unmatched", method="GET", status="404") >= 2
    assert not any("/no/such" in str(labels) for _, labels in samples)


def test_new_texts_are_cache_misses_and_repeats_are_hits(minilm_module: Service) -> None:
    texts = ["metrics cache one", "metrics cache two", "metrics cache three"]
    before = scrape(minilm_module)
    embed(minilm_module, texts)
    middle = scrape(minilm_module)
    embed(minilm_module, texts)
    after = scrape(minilm_module)
    misses, hits = "llama_embeddings_cache_misses_total", "llama_embeddings_cache_hits_total"
    assert value(middle, misses) - value(before, misses) == 3 and value(middle, hits) == value(before, hits)
    assert value(after, hits) - value(middle, hits) == 3 and value(after, misses) == value(middle, misses)


def test_tokens_and_batch_sizes_come_from_the_workers(minilm_module: Service) -> None:
    before = scrape(minilm_module)
    usage = embed(minilm_module, ["Hello tokens", "Hello batches"])["usage"]["prompt_tokens"]
    after = scrape(minilm_module)
    tokens = "llama_embeddings_tokens_embedded_total"
    assert usage > 0 and value(after, tokens, model=MINILM) - value(before, tokens, model=MINILM) == usage
    calls, sequences = "llama_embeddings_batch_size_count", "llama_embeddings_batch_size_sum"
    assert value(after, calls, model=MINILM) - value(before, calls, model=MINILM) >= 1
    assert value(after, sequences, model=MINILM) - value(before, sequences, model=MINILM) == 2


def test_committed_rows_grow_and_the_writer_queue_empties(minilm_module: Service) -> None:
    queue = "llama_embeddings_writer_queue_rows"
    # Rows of earlier tests may still wait for the next flush (DB_FLUSH_INTERVAL_MS): count from a quiet writer.
    minilm_module.wait_for(lambda: value(scrape(minilm_module), queue) == 0, timeout=5, message="earlier rows written")
    before = scrape(minilm_module)
    embed(minilm_module, ["row for the writer one", "row for the writer two"])
    committed = "llama_embeddings_writer_committed_rows_total"
    minilm_module.wait_for(lambda: value(scrape(minilm_module), committed) - value(before, committed) == 2, timeout=10,
                    message="two rows committed")
    assert value(scrape(minilm_module), queue) == 0


def test_live_workers_and_queue_depth_are_reported_per_model(minilm_module: Service) -> None:
    samples = scrape(minilm_module)
    assert value(samples, "llama_embeddings_live_workers", model=MINILM) == 1
    assert value(samples, "llama_embeddings_queue_depth", model=MINILM) == 0
    assert value(samples, "llama_embeddings_workers_registered_total", model=MINILM) >= 1
    assert value(samples, "llama_embeddings_writer_up") == 1


def test_ready_turns_503_while_the_writer_does_not_answer(minilm_module: Service) -> None:
    [writer] = [row for row in minilm_module.status()["processes"] if row["role"] == "writer"]
    os.kill(writer["pid"], signal.SIGSTOP)
    try:
        minilm_module.wait_for(lambda: ready(minilm_module).status_code == 503, timeout=10, message="/ready to say 503")
        assert any("writer" in reason for reason in ready(minilm_module).json()["reasons"])
    finally:
        os.kill(writer["pid"], signal.SIGCONT)
    minilm_module.wait_for(lambda: ready(minilm_module).status_code == 200, timeout=10, message="/ready to say 200 again")


def test_ready_turns_503_while_no_model_is_loaded_and_200_after_scale(minilm_service: Service) -> None:
    assert ready(minilm_service).status_code == 200
    minilm_service.cli("scale", MINILM, "0")
    nothing_loaded = "no model is loaded: `supervisor.py scale MODEL N` or POST /admin/models/MODEL/scale loads one"
    # The gateway hears the supervisor's word once a second: until then the model is listed without a worker.
    minilm_service.wait_for(lambda: ready(minilm_service).json()["reasons"] == [nothing_loaded], timeout=15,
                            message="/ready to name the cause")
    body = ready(minilm_service).json()
    assert body["status"] == "not ready" and body["live_workers"] == {}
    assert ready(minilm_service).headers["retry-after"]
    minilm_service.cli("scale", MINILM, "1")
    minilm_service.wait_for(lambda: ready(minilm_service).status_code == 200, timeout=60, message="/ready 200")


def test_a_killed_worker_counts_as_lost_and_its_replacement_as_registered(minilm_service: Service) -> None:
    before = scrape(minilm_service)
    [worker] = minilm_service.workers(MINILM)
    os.kill(worker["pid"], signal.SIGKILL)
    lost, registered = "llama_embeddings_workers_lost_total", "llama_embeddings_workers_registered_total"

    def grew(name: str) -> bool:
        return value(scrape(minilm_service), name, model=MINILM) == value(before, name, model=MINILM) + 1

    minilm_service.wait_for(lambda: grew(lost) and grew(registered), timeout=60,
                            message="the loss noticed and a replacement registered")
    assert value(scrape(minilm_service), "llama_embeddings_live_workers", model=MINILM) == 1


def test_a_worker_scaled_down_counts_as_left_not_lost(minilm_service: Service) -> None:
    minilm_service.cli("scale", MINILM, "0")
    left = "llama_embeddings_workers_left_total"
    minilm_service.wait_for(lambda: value(scrape(minilm_service), left, model=MINILM) == 1, timeout=30,
                            message="the worker to leave")
    samples = scrape(minilm_service)
    assert value(samples, "llama_embeddings_workers_lost_total", model=MINILM) == 0
    assert value(samples, "llama_embeddings_live_workers", model=MINILM) == 0


def test_openapi_document_describes_health_ready_and_metrics(minilm_module: Service) -> None:
    paths = httpx.get(f"{minilm_module.base_url}/openapi.json").json()["paths"]
    assert {"/health", "/ready", "/metrics"} <= set(paths)
    assert "text/plain" in paths["/metrics"]["get"]["responses"]["200"]["content"]
