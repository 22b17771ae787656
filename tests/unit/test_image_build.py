"""What the images would hold, checked without Docker.

No Docker engine runs here, so the images themselves are never built in this suite (the
Dockerfiles are linted in test_manifests.py). This test replays what their build stage
does to the project: it copies exactly the files the Dockerfile's build stage COPYs into an
empty folder, builds the wheel there with `pip wheel --no-deps` as the Dockerfile does (pip
fetches the build backend from the package index), and runs both programs from that wheel
alone, with the dashboards where the pipeline image puts them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "deploy" / "docker"


def build_stage_copies(dockerfile: Path) -> list[str]:
    """Sources of the COPY lines between the first and the second FROM."""
    sources: list[str] = []
    stages = 0
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "FROM":
            stages += 1
        elif words[0] == "COPY" and stages == 1:
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    return sources


def final_stage_copies(dockerfile: Path) -> list[tuple[str, str]]:
    """(source, destination) of the final stage's COPY lines that take files from the context."""
    copies: list[tuple[str, str]] = []
    stages = 0
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if words and words[0] == "FROM":
            stages += 1
        elif len(words) == 3 and words[0] == "COPY" and stages == 2:
            copies.append((words[1], words[2]))
    return copies


@pytest.mark.parametrize("image", ["collector", "pipeline"])
def test_the_build_stage_makes_a_wheel_that_runs_both_programs(image: str, tmp_path: Path) -> None:
    dockerfile = DOCKER / f"{image}.Dockerfile"
    context = tmp_path / "context"
    context.mkdir()
    sources = build_stage_copies(dockerfile)
    assert "pyproject.toml" in sources
    for source in sources:
        path = REPO / source
        if path.is_dir():
            shutil.copytree(path, context / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, context / source)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(tmp_path), "."],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = tmp_path.glob("logferry-*.whl")
    site = tmp_path / "site-packages"
    zipfile.ZipFile(wheel).extractall(site)
    modules = {p.relative_to(REPO).as_posix() for p in REPO.glob("*/*.py")}
    wanted = {m for m in modules if m.split("/")[0] in ("logferry", "collector", "pipeline")}
    assert wanted <= {p.relative_to(site).as_posix() for p in site.rglob("*.py")}
    for source, destination in final_stage_copies(dockerfile):
        if source.startswith("dashboards/"):
            target = site / destination.split("site-packages/", 1)[1]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / source, target)

    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1"}
    check = (
        "import collector.cli, pipeline.cli, pipeline.setup, sys;"
        "assert collector.cli.__file__.startswith(sys.argv[1]), collector.cli.__file__;"
        "assert pipeline.cli.__file__.startswith(sys.argv[1]), pipeline.cli.__file__;"
        "print(pipeline.setup.DASHBOARDS.is_file())"
    )

    def python(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *argv],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    imported = python("-c", check, str(site))
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == str(image == "pipeline")
    for program in ("collector", "pipeline"):
        helped = python("-m", program, "--help")
        assert helped.returncode == 0, helped.stderr
        assert "usage" in helped.stdout
