"""The operator console at /console, in a real browser (headless Chromium through Playwright) on the real service."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from tests.conftest import MINILM, SMOLLM
from tests.harness import PROJECT_ROOT, Service, running

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ARTEFACTS = PROJECT_ROOT / "data" / "test-artefacts"
SCALE_TIMEOUT_MS = 60_000

if not CHROMIUM.exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (scripts/setup.sh --test installs Debian's chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def console_service(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Service]:
    """Both default models served, one worker each; oversubscription allowed, so that two MiniLM workers fit 2 cores."""
    with running(tmp_path_factory.mktemp("console"), models_dir, MODELS_TO_SERVE=f"{MINILM},{SMOLLM}",
                 WORKERS_PER_MODEL="1", ALLOW_THREAD_OVERSUBSCRIPTION="true") as started:
        yield started


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, for the module."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def console(browser: Browser, console_service: Service) -> Iterator[Page]:
    """A fresh page (its own context: nothing in localStorage) with the console open."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.goto(f"{console_service.base_url}/console")
    yield page
    context.close()


def admin_model(service: Service, name: str) -> dict[str, Any]:
    """The model's entry in GET /admin/models."""
    response = httpx.get(f"{service.base_url}/admin/models", timeout=30)
    assert response.status_code == 200, response.text
    [model] = [model for model in response.json()["models"] if model["name"] == name]
    return model


def scale(service: Service, name: str, workers: int) -> None:
    """POST /admin/models/{name}/scale, then wait until the model has exactly that many workers, all ready."""
    response = httpx.post(f"{service.base_url}/admin/models/{name}/scale", json={"workers": workers}, timeout=60)
    assert response.status_code == 200, response.text

    def settled() -> bool:
        model = admin_model(service, name)
        return len(model["workers"]) == workers and all(worker["state"] == "ready" for worker in model["workers"])

    service.wait_for(settled, timeout=SCALE_TIMEOUT_MS / 1000, message=f"{name} back to {workers} ready worker(s)")


def model_section(page: Page, name: str) -> Locator:
    """The console's section of model `name`."""
    return page.locator(f'section[data-model="{name}"]')


def test_the_console_lists_both_default_models(console: Page) -> None:
    for name in (MINILM, SMOLLM):
        section = model_section(console, name)
        expect(section).to_be_visible(timeout=15_000)
        expect(section.locator(".model-name")).to_have_text(name)
        expect(section.locator("tr[data-worker-slot]")).to_have_count(1)
    expect(console.locator("#status")).to_contain_text("updated")


def test_scaling_a_model_to_two_in_the_console_makes_a_second_worker_row_appear(console: Page,
                                                                                 console_service: Service) -> None:
    section = model_section(console, MINILM)
    expect(section.locator("tr[data-worker-slot]")).to_have_count(1, timeout=15_000)
    try:
        section.locator("[data-scale-input]").fill("2")
        section.locator("[data-scale-button]").click()
        expect(section.locator("[data-scale-result]")).to_contain_text("scaling to 2 worker(s)")
        expect(section.locator("tr[data-worker-slot]")).to_have_count(2, timeout=SCALE_TIMEOUT_MS)
        expect(section.locator('tr[data-worker-slot="1"]')).to_be_visible()
    finally:
        scale(console_service, MINILM, 1)  # the other tests of the module expect one worker again


def test_embedding_a_text_in_the_console_shows_its_dimensions_and_first_numbers(console: Page) -> None:
    expect(model_section(console, MINILM)).to_be_visible(timeout=15_000)
    console.select_option("#embed-model", MINILM)
    console.locator("#embed-text").fill("The console embeds this sentence.")
    console.locator("#embed-button").click()
    expect(console.locator("#embed-result")).to_be_visible(timeout=30_000)
    expect(console.locator("#embed-dimensions")).to_have_text("384")
    expect(console.locator("#embed-cached")).to_have_text("no")
    numbers = console.locator("#embed-head").inner_text().rstrip(", …").split(", ")
    assert len(numbers) == 8 and all(-1.0 <= float(number) <= 1.0 for number in numbers)


def test_a_search_in_the_console_shows_results(console: Page, console_service: Service) -> None:
    stored = ["Penguins huddle together on the Antarctic ice.", "The bakery sells sourdough bread every morning."]
    response = httpx.post(f"{console_service.base_url}/get_embedding_vectors/",
                          json={"texts": stored, "model_name": MINILM}, timeout=60)
    assert response.status_code == 200, response.text
    query = "birds living in the cold south"
    expect(model_section(console, MINILM)).to_be_visible(timeout=15_000)
    console.select_option("#search-model", MINILM)
    console.locator("#search-query").fill(query)
    console.locator("#search-k").fill("5")
    results = console.locator("#search-results li")
    deadline = time.monotonic() + 30  # the search index may still be opening (503) just after start
    while True:
        console.locator("#search-button").click()
        expect(console.locator("#search-button")).to_be_enabled(timeout=30_000)
        if results.count() or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert results.count(), console.locator("#search-message").inner_text()
    texts = console.locator("#search-results li .text").all_inner_texts()
    assert set(stored) <= set(texts), texts
    similarities = [float(value) for value in console.locator("#search-results li .similarity").all_inner_texts()]
    assert similarities == sorted(similarities, reverse=True)


def test_a_screenshot_of_the_console_is_saved_as_a_test_artefact(console: Page) -> None:
    for name in (MINILM, SMOLLM):
        expect(model_section(console, name).locator("tr[data-worker-slot]")).to_have_count(1, timeout=15_000)
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / "console.png"
    path.unlink(missing_ok=True)
    console.screenshot(path=str(path), full_page=True)
    assert path.exists() and path.stat().st_size > 0
