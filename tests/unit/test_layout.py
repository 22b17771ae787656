"""The programs share code only through the logferry package (ARCHITECTURE.md, layout), and
the tests, the demo and the benchmarks share theirs only through harness/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "collector": {"pipeline", "tests", "bench"},
    "pipeline": {"collector", "tests", "bench"},
    "logferry": {"collector", "pipeline", "tests", "bench"},
    "harness": {"tests", "bench"},
    "tests": {"bench"},
    "bench": {"tests"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", list(FORBIDDEN))
def test_a_package_imports_no_other_program(package: str) -> None:
    files = sorted((REPO / package).rglob("*.py"))
    assert files
    for path in files:
        wrong = imported_packages(path) & FORBIDDEN[package]
        assert not wrong, f"{path.relative_to(REPO)} imports {sorted(wrong)}"
