"""Operators: models come and go while the service runs (scale, import, pull, load on demand, memory admission),
through the CLI and the admin API, on the real service."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import httpx
import psutil
import pytest

from tests.conftest import MINILM, SMOLLM
from tests.harness import Service, running
from tests.netns import Hosts, unavailable_reason

pytestmark = pytest.mark.slow
OTHER = "imported-minilm"


def own_models_dir(tmp_path: Path, models_dir: Path) -> Path:
    """A models folder of the test's own (imports and pulls write into it), holding links to the test models."""
    folder = tmp_path / "models"
    folder.mkdir()
    for model in models_dir.glob("*.gguf"):
        try:
            os.link(model, folder / model.name)
        except OSError:
            shutil.copy2(model, folder / model.name)
    return folder


@pytest.fixture(scope="module")
def operated(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Service]:
    """MiniLM served, SmolLM2 installed but not loaded, and a copy of MiniLM's GGUF to import as another model."""
    tmp_path = tmp_path_factory.mktemp("operated")
    folder = own_models_dir(tmp_path, models_dir)
    shutil.copy2(folder / "all-minilm-l6-v2.f16.gguf", tmp_path / f"{OTHER}.gguf")
    with running(tmp_path / "data", folder, MODELS_TO_SERVE=MINILM, ALLOW_THREAD_OVERSUBSCRIPTION="true",
                 LLAMA_EMBEDDING_SERVER_LISTEN_HOST="0.0.0.0") as service:
        service.cli("models", "import", str(tmp_path / f"{OTHER}.gguf"), "--name", OTHER)
        yield service


def listed(service: Service) -> list[str]:
    return httpx.get(f"{service.base_url}/get_list_of_available_model_names/", timeout=10).json()["model_names"]


def openai_models(service: Service) -> list[str]:
    return [model["id"] for model in httpx.get(f"{service.base_url}/v1/models", timeout=10).json()["data"]]


def embed(service: Service, text: str, model: str) -> httpx.Response:
    return httpx.post(f"{service.base_url}/get_embedding_vector/", json={"text": text, "model_name": model}, timeout=150)


def admin_models(service: Service) -> dict[str, Any]:
    response = httpx.get(f"{service.base_url}/admin/models", timeout=10)
    assert response.status_code == 200, response.text
    return {model["name"]: model for model in response.json()["models"]}


def scale(service: Service, model: str, workers: int) -> httpx.Response:
    return httpx.post(f"{service.base_url}/admin/models/{model}/scale", json={"workers": workers}, timeout=30)


def settled(service: Service) -> bool:
    """Every process ready and each model at its wanted worker count (no replacement under way)."""
    status = service.status()
    workers = [row for row in status["processes"] if row["role"] == "worker"]
    return all(row["state"] == "ready" for row in status["processes"]) and all(
        sum(1 for row in workers if row["model"] == model) == count for model, count in status["desired"].items())


def instance_rss(service: Service) -> int:
    """The resident memory of every process of the instance (supervisor included), once it has settled: scaling
    one model changes the threads of the others, whose workers are then replaced."""
    service.wait_for(lambda: settled(service), timeout=60, message="the instance to settle")
    status = service.status()
    total = 0
    for pid in [status["pid"], *(row["pid"] for row in status["processes"])]:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            pass
    return total


def scaled_to(service: Service, model: str, count: int) -> None:
    service.cli("scale", model, str(count))
    if count:
        service.wait_for(lambda: model in listed(service), timeout=60, message=f"{model} to be listed")
    else:
        service.wait_for(lambda: not service.workers(model), timeout=30, message=f"{model}'s workers to exit")


def test_a_model_imported_while_serving_is_listed_and_answers_once_scaled_to_1(operated: Service) -> None:
    assert OTHER not in listed(operated)
    operated.cli("scale", OTHER, "1")
    operated.wait_for(lambda: OTHER in listed(operated) and OTHER in openai_models(operated), timeout=60,
                      message="the imported model in both lists")
    response = embed(operated, "a text for the imported model", OTHER)
    assert response.status_code == 200 and len(response.json()["embedding"]) == 384
    scaled_to(operated, OTHER, 0)


def test_scaling_a_model_to_0_removes_it_from_the_lists_ends_its_worker_and_gives_its_memory_back(
        operated: Service) -> None:
    before = instance_rss(operated)
    scaled_to(operated, SMOLLM, 1)
    [worker] = operated.workers(SMOLLM)
    loaded = instance_rss(operated)
    operated.cli("scale", SMOLLM, "0")
    operated.wait_for(lambda: SMOLLM not in listed(operated) and SMOLLM not in openai_models(operated), timeout=15,
                      message="SmolLM2 gone from the lists")
    operated.wait_for(lambda: not psutil.pid_exists(worker["pid"]) or
                      psutil.Process(worker["pid"]).status() == psutil.STATUS_ZOMBIE, timeout=30,
                      message="its worker process to exit")
    after = instance_rss(operated)
    assert loaded - before > 100 * 2**20, (before, loaded)  # the SmolLM2 worker: its 94 MB file and its context
    assert after < before + 40 * 2**20, (before, loaded, after)


def test_scaling_is_kept_across_stop_and_start_and_shown_by_status(operated: Service) -> None:
    scaled_to(operated, OTHER, 1)
    operated.stop()
    operated.start()
    assert OTHER in listed(operated)
    assert operated.status()["scaled"][OTHER] == 1
    assert f"scaled by the operator (kept across restarts in {operated.data_dir / 'scale.json'}): " in \
        operated.cli("status").stdout
    scaled_to(operated, OTHER, 0)
    operated.stop()
    operated.start()
    assert OTHER not in listed(operated) and operated.workers(OTHER) == []


def test_a_request_for_an_installed_model_without_workers_gets_503_naming_the_command_that_loads_it(
        operated: Service) -> None:
    response = embed(operated, "nobody computes this", SMOLLM)
    assert response.status_code == 503
    assert f"`supervisor.py scale {SMOLLM} 1`" in response.json()["detail"]
    assert "LOAD_ON_DEMAND" in response.json()["detail"]


def test_a_model_nothing_installed_stays_422(operated: Service) -> None:
    response = embed(operated, "text", "no-such-model")
    assert response.status_code == 422
    assert "unknown model 'no-such-model'" in response.json()["detail"]


def test_the_admin_api_lists_installed_and_served_models_with_workers_and_state(operated: Service) -> None:
    models = admin_models(operated)
    assert {MINILM, SMOLLM, OTHER} <= set(models)
    assert models[MINILM]["state"] == "serving" and models[MINILM]["served"]
    [worker] = models[MINILM]["workers"]
    assert worker["state"] == "ready" and worker["rss_bytes"] > 0 and worker["threads"] >= 1
    assert models[SMOLLM]["state"] == "stopped" and models[SMOLLM]["workers"] == []
    assert models[SMOLLM]["size_bytes"] > 0 and models[SMOLLM]["dimensions"] == 576


def test_the_admin_api_scales_a_model_and_says_404_for_one_not_installed(operated: Service) -> None:
    response = scale(operated, OTHER, 1)
    assert response.status_code == 200 and response.json()["workers"] == 1
    operated.wait_for(lambda: admin_models(operated)[OTHER]["state"] == "serving", timeout=60, message="serving")
    assert scale(operated, OTHER, 0).status_code == 200
    operated.wait_for(lambda: not operated.workers(OTHER), timeout=30, message="its worker to exit")
    missing = scale(operated, "no-such-model", 1)
    assert missing.status_code == 404 and "not installed" in missing.json()["detail"]
    assert scale(operated, OTHER, -1).status_code == 422


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


def test_the_admin_api_pulls_a_gguf_from_a_url_and_reports_its_progress(operated: Service, tmp_path: Path,
                                                                          models_dir: Path) -> None:
    shutil.copy2(models_dir / "all-minilm-l6-v2.f16.gguf", tmp_path / "served.gguf")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_QuietHandler, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/served.gguf"
        response = httpx.post(f"{operated.base_url}/admin/models/pull", json={"url": url, "name": "pulled"}, timeout=10)
        assert response.status_code == 202, response.text
        assert response.json()["pull"]["state"] == "running"

        def pull() -> dict[str, Any]:
            pulls = httpx.get(f"{operated.base_url}/admin/models", timeout=10).json()["pulls"]
            return next(p for p in pulls if p["target"] == url)

        operated.wait_for(lambda: pull()["state"] != "running", timeout=60, message="the pull to end")
        assert pull()["state"] == "done", pull()
        assert pull()["bytes"] == (tmp_path / "served.gguf").stat().st_size
        operated.wait_for(lambda: "pulled" in admin_models(operated), timeout=10, message="the pulled model")
    finally:
        server.shutdown()
        server.server_close()
    assert scale(operated, "pulled", 1).status_code == 200
    operated.wait_for(lambda: "pulled" in listed(operated), timeout=60, message="the pulled model listed")
    assert embed(operated, "a text for the pulled model", "pulled").status_code == 200
    scaled_to(operated, "pulled", 0)


def test_the_admin_api_refuses_other_hosts_while_the_token_is_off(operated: Service) -> None:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    hosts = Hosts()
    try:
        hosts.link("", "10.79.0.1", "client", "10.79.0.2")
        ask = ("import httpx, sys; r = httpx.get(sys.argv[1], timeout=10); print(r.status_code); print(r.text)")
        result = subprocess.run([*hosts.launcher("client"), sys.executable, "-c", ask,
                                 f"http://10.79.0.1:{operated.port}/admin/models"],
                                capture_output=True, text=True, timeout=60, check=True)
        status, body = result.stdout.split("\n", 1)
        assert status == "403"
        assert "only on loopback" in body and "10.79.0.2" in body
        # the rest of the API answers that host as before
        names = subprocess.run([*hosts.launcher("client"), sys.executable, "-c", ask,
                                f"http://10.79.0.1:{operated.port}/get_list_of_available_model_names/"],
                               capture_output=True, text=True, timeout=60, check=True)
        assert names.stdout.startswith("200")
    finally:
        hosts.close()


@pytest.fixture(scope="module")
def on_demand(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Service]:
    """LOAD_ON_DEMAND on, SmolLM2 installed but not loaded, unloaded again after 4 s idle."""
    with running(tmp_path_factory.mktemp("on-demand"), models_dir, MODELS_TO_SERVE=MINILM, LOAD_ON_DEMAND="true",
                 MODEL_IDLE_UNLOAD_SECONDS="4", ALLOW_THREAD_OVERSUBSCRIPTION="true") as service:
        yield service


def test_with_load_on_demand_the_first_request_for_an_unloaded_model_loads_it_and_answers_200(
        on_demand: Service) -> None:
    assert on_demand.workers(SMOLLM) == []
    response = embed(on_demand, "the first request loads the model", SMOLLM)
    assert response.status_code == 200 and len(response.json()["embedding"]) == 576
    assert response.json()["cached"] is False
    assert on_demand.status()["on_demand"] == [SMOLLM]


def test_a_model_loaded_on_demand_is_unloaded_after_the_idle_time(on_demand: Service) -> None:
    assert embed(on_demand, "load it (again) and leave it idle", SMOLLM).status_code == 200
    assert on_demand.workers(SMOLLM)
    on_demand.wait_for(lambda: not on_demand.workers(SMOLLM), timeout=30, message="SmolLM2 to be unloaded")
    assert SMOLLM not in listed(on_demand)
    assert on_demand.status()["on_demand"] == []
    assert "unloading smollm2-135m-instruct: loaded on demand" in \
        (on_demand.data_dir / "logs" / "supervisor.log").read_text()


@pytest.fixture(scope="module")
def little_memory(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Service]:
    """A reserve larger than this machine's memory: every further worker is refused (the running one stays)."""
    reserve_mb = psutil.virtual_memory().total // 2**20 + 1024
    with running(tmp_path_factory.mktemp("little-memory"), models_dir, MODELS_TO_SERVE=MINILM,
                 MEMORY_RESERVE_MB=str(reserve_mb), ALLOW_THREAD_OVERSUBSCRIPTION="true") as service:
        yield service


def test_memory_admission_refuses_a_model_that_does_not_fit_with_the_sizes_in_the_message(
        little_memory: Service) -> None:
    refused = little_memory.cli("scale", SMOLLM, "1", check=False)
    assert refused.returncode == 1
    assert "not enough memory to load 1 more worker(s) of 'smollm2-135m-instruct'" in refused.stderr
    assert "the model file 94 MB" in refused.stderr and "MEMORY_RESERVE_MB keeps" in refused.stderr
    response = scale(little_memory, SMOLLM, 1)
    assert response.status_code == 409 and "not enough memory" in response.json()["detail"]
    assert little_memory.workers(SMOLLM) == []
    assert little_memory.status()["desired"][SMOLLM] == 0


def test_a_refused_load_leaves_what_serves_untouched(little_memory: Service) -> None:
    [before] = little_memory.workers(MINILM)
    little_memory.cli("scale", SMOLLM, "1", check=False)
    little_memory.cli("scale", MINILM, "2", check=False)  # a second worker of a served model is refused as well
    [after] = little_memory.workers(MINILM)
    assert after["pid"] == before["pid"] and after["state"] == "ready"
    assert embed(little_memory, "still served", MINILM).status_code == 200
