"""The collector's command line as a user runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from tests.unit.logfiles import append, cri_line, docker_container, docker_line

REPO = Path(__file__).resolve().parents[2]


def collector(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    extra = ["--config", str(config)] if config else []
    return subprocess.run(
        [sys.executable, "-m", "collector", *extra, *args],
        capture_output=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )


def test_once_to_stdout_prints_every_line_and_exits_0(tmp_path: Path) -> None:
    docker_log = docker_container(tmp_path / "docker", "d" * 64)
    append(docker_log, docker_line("from docker"))
    pod = tmp_path / "log" / "pods" / "ns_pod_uid" / "app"
    pod.mkdir(parents=True)
    append(pod / "0.log", cri_line("from cri"), cri_line("again", "stderr"))
    written = docker_log.stat().st_size + (pod / "0.log").stat().st_size
    done = collector(
        "--once", "--sink", "stdout", "--docker-root", str(tmp_path / "docker"),
        "--log-root", str(tmp_path / "log"), "--state-dir", str(tmp_path / "state"),
        "--metrics-port", "0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert sorted(r["message"] for r in records) == ["again", "from cri", "from docker"]
    *logged, last = done.stderr.splitlines()
    for line in logged:
        assert orjson.loads(line)["level"]
    assert last == (
        b"collector: once: 2 files, 3 lines, "
        + str(written).encode()
        + b" bytes read; 3 records, 3 delivered, 0 undelivered"
    )


def test_missing_roots_and_globs_matching_nothing_are_said(tmp_path: Path) -> None:
    done = collector(
        "--once", "--sink", "stdout", "--docker-root", str(tmp_path / "no-docker"),
        "--log-root", str(tmp_path / "no-log"), "--state-dir", str(tmp_path / "state"),
        "--metrics-port", "0", "--include", "*/nothing-like-this/*",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    *logged, last = done.stderr.decode().splitlines()
    warnings = [orjson.loads(line)["message"] for line in logged]
    assert f"docker_root {tmp_path / 'no-docker'} is not a folder: no logs will be found there" in (
        warnings
    )
    assert f"log_root {tmp_path / 'no-log'} is not a folder: no logs will be found there" in (
        warnings
    )
    assert any(w.startswith("no log file passes include") for w in warnings)
    assert last.startswith("collector: once: 0 files, 0 lines")


def test_settings_from_yaml_then_flags(tmp_path: Path) -> None:
    pod = tmp_path / "log" / "pods" / "ns_pod_uid" / "app"
    pod.mkdir(parents=True)
    append(pod / "0.log", cri_line("x"))
    config = tmp_path / "collector.yaml"
    config.write_text(
        f"log_root: {tmp_path / 'log'}\nstate_dir: {tmp_path / 'state'}\n"
        f"sink: file:{tmp_path / 'never.jsonl'}\nmetrics_port: 0\nnode_name: yaml-node\n"
    )
    out = tmp_path / "out.jsonl"
    done = collector("--once", "--sink", f"file:{out}", config=config)
    assert done.returncode == 0, done.stderr
    (record,) = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert record["host"]["name"] == "yaml-node"
    assert not (tmp_path / "never.jsonl").exists()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--sink", "kafka"], "bootstrap_servers"),
        (["--sink", "s3"], "sink"),
        (["--sink", "stdout", "--max-open-files", "0"], "max_open_files"),
        (["--sink", "stdout", "--multiline", "*=(unclosed"], "multiline"),
        (["--sink", "stdout", "--metrics-port", "70000"], "metrics_port"),
        (["--sink", "kafka", "--bootstrap-servers", "k:1", "--kafka", "no.such.option=1"], "kafka"),
    ],
)
def test_a_wrong_setting_stops_with_one_line_naming_it(args: list[str], named: str) -> None:
    env_free = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    done = subprocess.run(
        [sys.executable, "-m", "collector", *args],
        capture_output=True,
        cwd=REPO,
        env={**env_free, "PYTHONPATH": str(REPO)},
        timeout=60,
        text=True,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert named in lines[0]


def test_help_documents_every_option() -> None:
    from collector.config import OPTIONS

    done = collector("--help")
    assert done.returncode == 0
    for option in OPTIONS:
        assert f"--{option.name.replace('_', '-')}" in done.stdout.decode()


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("enable.idempotence=false", "enable.idempotence"),
        ("partitioner=random", "partitioner"),
        ("message.timeout.ms=300000", "message.timeout.ms"),
    ],
)
def test_kafka_settings_that_break_checkpoint_safety_are_refused(
    tmp_path: Path, setting: str, named: str
) -> None:
    """Checkpoints advance once every record of a batch is held by every in-sync replica,
    in order, and none is given up on while the brokers are away."""
    line = refused(tmp_path, setting)
    assert named in line, line
    assert "checkpoint" in line, line


def refused(tmp: Path, setting: str) -> str:
    """The one line a collector given `--kafka setting` exits 2 with."""
    append(docker_container(tmp / "docker", "e" * 64), docker_line("x"))
    done = collector(
        "--once", "--sink", "kafka", "--bootstrap-servers", "127.0.0.1:1",
        "--kafka", setting, "--docker-root", str(tmp / "docker"),
        "--log-root", str(tmp / "log"), "--state-dir", str(tmp / "state"),
        "--metrics-port", "0",
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_a_producer_queue_smaller_than_a_record_is_refused(tmp_path: Path) -> None:
    """librdkafka refuses a record larger than its whole queue as if the queue were full:
    the collector waited for room that never came, --once for ever."""
    line = refused(tmp_path, "queue.buffering.max.kbytes=256")
    assert "queue.buffering.max.kbytes" in line, line
    assert "message.max.bytes" in line, line


def test_a_second_collector_on_the_same_state_dir_exits_2_naming_it(tmp_path: Path) -> None:
    log = docker_container(tmp_path / "docker", "f" * 64)
    append(log, docker_line("first"))
    state = tmp_path / "state"
    out = tmp_path / "out.jsonl"
    flags = [
        "--docker-root", str(tmp_path / "docker"), "--log-root", str(tmp_path / "log"),
        "--state-dir", str(state), "--metrics-port", "0", "--scan-interval", "0.1",
    ]  # fmt: skip
    first = subprocess.Popen(
        [sys.executable, "-m", "collector", "--sink", f"file:{out}", *flags],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (out.exists() and out.read_bytes()) and time.monotonic() < deadline:
            assert first.poll() is None, "the first collector stopped"
            time.sleep(0.05)
        assert out.read_bytes(), "the first collector shipped nothing"
        second = collector("--once", "--sink", f"file:{tmp_path / 'second.jsonl'}", *flags)
        assert second.returncode == 2, second.stderr
        lines = second.stderr.decode().strip().splitlines()
        assert len(lines) == 1, lines
        assert str(state) in lines[0], lines[0]
        assert not (tmp_path / "second.jsonl").exists()
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(60)
    third = collector("--once", "--sink", f"file:{tmp_path / 'third.jsonl'}", *flags)
    assert third.returncode == 0, third.stderr
