"""The house rules a reviewer would otherwise have to remember: checked on every run."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.harness import PROJECT_ROOT

PACKAGES = ("gateway", "workers", "shared", "supervision", "modelstore")


def _public_definitions(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef]:
    """Public classes and functions of a module, and the public methods of its public classes."""
    found: list[ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            found.append(node)
            if isinstance(node, ast.ClassDef):
                pending.extend(node.body)
    return found


def test_every_public_class_and_function_of_the_packages_has_a_docstring() -> None:
    paths = [PROJECT_ROOT / "supervisor.py", *(p for package in PACKAGES for p in (PROJECT_ROOT / package).rglob("*.py"))]
    missing = [f"{Path(path).relative_to(PROJECT_ROOT)}:{node.lineno} {node.name}"
               for path in paths for node in _public_definitions(ast.parse(path.read_text()))
               if ast.get_docstring(node) is None]
    assert not missing, "public names without a docstring:\n" + "\n".join(missing)
