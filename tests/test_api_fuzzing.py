"""Schemathesis against the running service's own /openapi.json: no 5xx, and answers match the schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import MINILM
from tests.harness import Service

pytestmark = pytest.mark.slow
EXAMPLES_PER_OPERATION = 15


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Service]:
    service = Service(tmp_path_factory.mktemp("fuzzed"), models_dir, {"MODELS_TO_SERVE": MINILM})
    try:
        yield service.start()
    finally:
        service.stop()


def test_no_operation_answers_5xx_or_breaks_its_schema(fuzzed: Service) -> None:
    command = [str(Path(sys.executable).with_name("schemathesis")), "run", f"{fuzzed.base_url}/openapi.json",
               "--checks", "not_a_server_error,response_schema_conformance",
               "--max-examples", str(EXAMPLES_PER_OPERATION), "--generation-deterministic", "--request-timeout", "60"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-6000:]
