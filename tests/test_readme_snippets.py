"""The README's "Use it from..." snippets run as printed, against the real system, with only the address changed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import PROJECT_ROOT, Service

pytestmark = pytest.mark.slow

README_ADDRESS = "localhost:8089"


def snippets(language: str) -> list[str]:
    """The code blocks in `language` of the README's "Use it from..." section, in order."""
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Use it from...", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)


PYTHON_SNIPPETS = snippets("python")


def at(service: Service, code: str) -> str:
    return code.replace(README_ADDRESS, service.base_url.removeprefix("http://"))


def test_the_section_has_a_snippet_for_each_client() -> None:
    code = "\n".join(PYTHON_SNIPPETS)
    for client in ("httpx", "from openai import", "from langchain_openai import", "from llama_index"):
        assert client in code
    assert len(snippets("bash")) == 1


def test_the_curl_snippet_gets_a_json_answer_from_each_endpoint(minilm_module: Service) -> None:
    [script] = snippets("bash")
    # -f: an HTTP error fails the script (the README's `curl -s` would print the error body and go on).
    script = at(minilm_module, script).replace("curl -s ", "curl -sf ")
    done = subprocess.run(["bash", "-e", "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count('"embedding"') >= 3 and '"tokens"' in done.stdout


@pytest.mark.parametrize("code", PYTHON_SNIPPETS, ids=[code.splitlines()[0] for code in PYTHON_SNIPPETS])
def test_the_python_snippet_runs(minilm_module: Service, code: str, tmp_path: Path) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(at(minilm_module, code), encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
