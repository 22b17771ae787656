"""docs/capacity.md is what bench/capacity.py computes from the figures of
bench/capacity.json, and every measured figure names the command that measures it.

The script runs as a program (tests do not import bench/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "capacity.md"
FIGURES = REPO / "bench" / "capacity.json"


def capacity(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "bench" / "capacity.py"), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def test_the_document_holds_the_models_output_for_its_figures() -> None:
    done = capacity()
    assert done.returncode == 0, done.stderr
    assert done.stdout in DOC.read_text(), (
        "docs/capacity.md differs from bench/capacity.py's output: run "
        "`bench/capacity.py --update docs/capacity.md`"
    )
    for nodes in ("100", "1,000", "10,000"):
        assert f"### {nodes} nodes" in done.stdout


def test_a_new_figure_changes_the_tables_and_a_wrong_name_is_refused(tmp_path: Path) -> None:
    changed = capacity("--set", "collector_mb_per_cpu_s=50")
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout not in DOC.read_text()
    copy = tmp_path / "capacity.md"
    copy.write_text(DOC.read_text())
    assert capacity("--set", "collector_mb_per_cpu_s=50", "--update", str(copy)).returncode == 0
    assert changed.stdout in copy.read_text()
    assert copy.read_text().startswith("# Capacity model")
    wrong = capacity("--set", "collector_speed=50")
    assert wrong.returncode != 0
    assert "no figure 'collector_speed'" in wrong.stderr


def test_every_measured_figure_names_a_benchmark_that_exists() -> None:
    figures = json.loads(FIGURES.read_text())
    for name, entry in figures.items():
        assert entry["what"], name
        if entry.get("source") == "planning choice":
            assert entry["what"].startswith("choice:"), name
            continue
        script = next(word for word in entry["command"].split() if word.startswith("bench/"))
        assert (REPO / script).is_file(), f"{name}: {script} does not exist"
        assert entry["value"] > 0, f"{name} has no measured value"
