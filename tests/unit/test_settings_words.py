"""What both programs say about their settings: units, one-line errors, help and version."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from logferry.settings import positive_int, seconds, size

REPO = Path(__file__).resolve().parents[2]


def run(program: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KAFKA_BOOTSTRAP_SERVERS", "ELASTICSEARCH_URL")
    }
    return subprocess.run(
        [sys.executable, "-m", program, *args],
        capture_output=True,
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
        timeout=60,
        text=True,
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("5000000", 5_000_000),
        ("5MB", 5_000_000),
        ("5 MB", 5_000_000),
        ("5mb", 5_000_000),
        ("64KiB", 65_536),
        ("1.5MiB", 1_572_864),
        ("2G", 2_000_000_000),
        ("1GiB", 1_073_741_824),
        ("512B", 512),
        ("100k", 100_000),
    ],
)
def test_sizes_take_units(text: str, value: int) -> None:
    assert size(text) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [("30", 30.0), ("30s", 30.0), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0), ("1.5 s", 1.5)],
)
def test_durations_take_units(text: str, value: float) -> None:
    assert seconds(text) == value


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        (size, "5 parsecs"),
        (size, "-1MB"),
        (size, "0"),
        (size, ""),
        (seconds, "soon"),
        (seconds, "-2s"),
        (seconds, "5 days"),
        (positive_int, "5MB"),
        (positive_int, "three"),
    ],
)
def test_a_wrong_number_is_said_in_our_words(kind: object, text: str) -> None:
    with pytest.raises(ValueError, match="must be") as caught:
        kind(text)  # type: ignore[operator]
    assert "invalid literal" not in str(caught.value)
    assert "could not convert" not in str(caught.value)


@pytest.mark.parametrize(
    ("program", "args", "named"),
    [
        ("collector", ["--sink", "stdout", "--max-record-bytes", "lots"], "max_record_bytes"),
        ("collector", ["--sink", "stdout", "--shutdown-grace", "a while"], "shutdown_grace"),
        (
            "pipeline",
            ["run", "--bootstrap-servers", "k:1", "--elasticsearch-url", "http://e:9200",
             "--bulk-bytes", "5 parsecs"],
            "bulk_bytes",
        ),
    ],
)  # fmt: skip
def test_a_number_error_names_the_setting_without_python(
    program: str, args: list[str], named: str
) -> None:
    done = run(program, *args)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert named in line
    assert "invalid literal" not in line
    assert "could not convert" not in line


@pytest.mark.parametrize(
    ("program", "args"),
    [
        ("collector", ["--no-such-flag"]),
        ("collector", ["--once", "extra"]),
        ("pipeline", ["run", "--no-such-flag"]),
        ("pipeline", ["setup", "--bulk-bytes", "1"]),
        ("pipeline", ["index"]),
    ],
)
def test_a_usage_error_is_one_line_with_a_hint_and_exit_2(program: str, args: list[str]) -> None:
    done = run(program, *args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "--help" in lines[0]
    assert "usage:" not in lines[0]


def test_units_reach_the_program(tmp_path: Path) -> None:
    (tmp_path / "docker").mkdir()
    done = run(
        "collector", "--once", "--sink", "stdout", "--metrics-port", "0",
        "--docker-root", str(tmp_path / "docker"), "--log-root", str(tmp_path),
        "--state-dir", str(tmp_path / "state"),
        "--max-record-bytes", "64KiB", "--shutdown-grace", "1500ms", "--scan-interval", "1s",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_pipeline_help_lists_only_each_commands_options() -> None:
    run_help = run("pipeline", "run", "--help").stdout
    setup_help = run("pipeline", "setup", "--help").stdout
    assert "--bulk-bytes" in run_help
    assert "--group" in run_help
    assert "--kibana" not in run_help
    assert "--kibana" in setup_help
    assert "--elasticsearch-url" in setup_help
    assert "--bulk-bytes" not in setup_help
    assert "--group" not in setup_help
    for text in (run_help, setup_help):
        assert "[default: ]" not in text


@pytest.mark.parametrize("program", ["collector", "pipeline"])
def test_version(program: str) -> None:
    from importlib.metadata import version

    done = run(program, "--version")
    assert done.returncode == 0, done.stderr
    assert version("logferry") in done.stdout
