"""Repeated failures are said once, then with a count at a slowing pace, not 14 times a second."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from logferry.jsonlog import JsonFormatter, RepeatFolder
from tests.unit.logfiles import append, docker_container, docker_line

REPO = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def folded_logger(clock: Clock, max_keys: int = 256) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RepeatFolder(clock, max_keys))
    logger = logging.getLogger(f"test.folding.{id(out)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, out


def said(out: io.StringIO) -> list[str]:
    return [orjson.loads(line)["message"] for line in out.getvalue().splitlines()]


def test_a_failure_repeated_every_100ms_for_10_minutes_is_said_a_few_times() -> None:
    clock = Clock()
    logger, out = folded_logger(clock)
    for attempt in range(6000):
        logger.warning("connect to 127.0.0.1:1 failed (after %d ms, attempt %d)", attempt, attempt)
        clock.now += 0.1
    lines = said(out)
    # first, then reminders at 10 s, 30 s, 60 s, and every 300 s: 10 + 30 + 60 + 300 < 600
    assert len(lines) == 5, lines
    assert lines[0] == "connect to 127.0.0.1:1 failed (after 0 ms, attempt 0)"
    for line, span in zip(
        lines[1:],
        ("10 s; first 10", "30 s; first 40", "60 s; first 100", "300 s; first 400"),
        strict=True,
    ):
        assert span in line, line
    repeats = [int(line.split("again ")[1].split(" ")[0]) for line in lines[1:]]
    assert [round(r, -1) for r in repeats] == [100, 300, 600, 3000]


def test_distinct_failures_and_info_lines_are_all_said() -> None:
    clock = Clock()
    logger, out = folded_logger(clock)
    for _ in range(3):
        logger.warning("kafka: broker down")
        logger.error("elasticsearch: 503")
        logger.info("batch of 5 sent")
        clock.now += 0.5
    assert said(out) == [
        "kafka: broker down", "elasticsearch: 503", "batch of 5 sent",
        "batch of 5 sent", "batch of 5 sent",
    ]  # fmt: skip


def test_failures_of_different_files_or_brokers_are_each_said() -> None:
    clock = Clock()
    logger, out = folded_logger(clock)
    for _ in range(2):
        logger.warning("let go of /var/log/pods/a_web-1_u1/app/0.log with %d bytes unread", 5)
        logger.warning("let go of /var/log/pods/a_web-2_u2/app/0.log with %d bytes unread", 9)
        logger.warning("kafka: 10.0.0.%d:9092/%d: Disconnected (after 3ms)", 1, 1)
        logger.warning("kafka: 10.0.0.%d:9092/%d: Disconnected (after 5ms)", 2, 2)
        clock.now += 1
    assert said(out) == [
        "let go of /var/log/pods/a_web-1_u1/app/0.log with 5 bytes unread",
        "let go of /var/log/pods/a_web-2_u2/app/0.log with 9 bytes unread",
        "kafka: 10.0.0.1:9092/1: Disconnected (after 3ms)",
        "kafka: 10.0.0.2:9092/2: Disconnected (after 5ms)",
    ]


def test_a_failure_after_a_quiet_spell_is_said_again_at_once() -> None:
    clock = Clock()
    logger, out = folded_logger(clock)
    logger.warning("broker down")
    clock.now += 400
    logger.warning("broker down")
    assert said(out) == ["broker down", "broker down"]


def test_memory_is_bounded_by_max_keys() -> None:
    clock = Clock()
    logger, out = folded_logger(clock, max_keys=3)
    for n in ("a", "b", "c", "d", "a"):
        logger.warning("failure %s", n)
    # "a" was forgotten when "d" came, so its return is said again
    assert said(out) == ["failure a", "failure b", "failure c", "failure d", "failure a"]


def test_the_collector_with_kafka_away_logs_a_handful_of_lines(tmp_path: Path) -> None:
    log = docker_container(tmp_path / "docker", "c" * 64)
    append(log, *[docker_line(f"line {n}") for n in range(50)])
    collector = subprocess.Popen(
        [sys.executable, "-m", "collector", "--bootstrap-servers", "127.0.0.1:1",
         "--docker-root", str(tmp_path / "docker"), "--log-root", str(tmp_path / "log"),
         "--state-dir", str(tmp_path / "state"), "--metrics-port", "0", "--shutdown-grace", "1"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert collector.stderr is not None
        os.set_blocking(collector.stderr.fileno(), False)
        # The measured span: librdkafka retries the broker several times a second in it.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and collector.poll() is None:
            time.sleep(0.5)
    finally:
        collector.send_signal(signal.SIGTERM)
        try:
            collector.wait(60)
        except subprocess.TimeoutExpired:
            collector.kill()
            collector.wait()
    assert collector.stderr is not None
    os.set_blocking(collector.stderr.fileno(), True)
    # JSON log lines, then (stopped with records undelivered) one plain closing line.
    lines = [orjson.loads(line) for line in collector.stderr.read().splitlines() if line[:1] == "{"]
    kafka = [line for line in lines if "kafka" in line["logger"] or "kafka" in line["message"]]
    assert kafka, lines
    # About 200 without folding; distinct librdkafka states (refused, timed out) each count.
    assert len([line for line in lines if line["level"] in ("warning", "error")]) <= 12, lines
