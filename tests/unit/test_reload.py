"""Settings reloaded while the collector runs: in place, without losing its place."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from collector.agent import Agent
from collector.config import parse
from collector.reload import Reloader
from tests.unit.logfiles import ListSink, append, cri_line, drain

REPO = Path(__file__).resolve().parents[2]


def pod_log(tmp: Path, pod: str) -> Path:
    folder = tmp / "log" / "pods" / f"shop_{pod}_uid-{pod}" / "app"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "0.log"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def started(tmp: Path, settings: str) -> tuple[Agent, ListSink, Path, Clock]:
    config_file = tmp / "collector.yaml"
    config_file.write_text(settings)
    argv = [
        "--config", str(config_file), "--sink", "stdout", "--log-root", str(tmp / "log"),
        "--docker-root", str(tmp / "docker"), "--state-dir", str(tmp / "state"),
        "--metrics-port", "0", "--node-name", "node-a",
    ]  # fmt: skip
    clock = Clock()
    sink = ListSink()
    agent = Agent(parse(argv), sink, reloader=Reloader(argv, str(config_file), clock))
    return agent, sink, config_file, clock


def test_a_changed_file_is_taken_in_place(tmp_path: Path) -> None:
    web, cart = pod_log(tmp_path, "web"), pod_log(tmp_path, "cart")
    agent, sink, config_file, clock = started(tmp_path, "parser: auto\n")
    append(web, cri_line('{"msg":"one","level":"info"}'))
    append(cart, cri_line("cart one"))
    drain(agent)
    config_file.write_text(
        f"parser: none\nexclude: ['{cart.parent.parent}/*']\nredact: ['order=order-\\d+']\n"
    )
    clock.now += 3
    agent.maybe_reload()
    append(web, cri_line('{"msg":"two","level":"info"}'), cri_line("paid order-42"))
    append(cart, cri_line("cart two"))
    drain(agent)
    by_pod: dict[str, list[str]] = {}
    for record in sink.records:
        by_pod.setdefault(record["kubernetes"]["pod"]["name"], []).append(record["message"])
    assert by_pod == {
        "web": ["one", '{"msg":"two","level":"info"}', "paid [REDACTED:order]"],
        "cart": ["cart one"],
    }
    assert not any(f.path == str(cart) for f in agent.files.values())


def test_a_bad_file_is_refused_and_the_running_settings_stay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    web = pod_log(tmp_path, "web")
    agent, sink, config_file, clock = started(tmp_path, "parser: auto\n")
    config_file.write_text("parser: yaml\n")
    clock.now += 3
    with caplog.at_level(logging.ERROR):
        agent.maybe_reload()
    assert [r.getMessage() for r in caplog.records if "reload" in r.getMessage()] == [
        "config reload refused, the running settings stay: setting parser "
        f"({config_file}): must be one of auto, json, logfmt, none, got 'yaml'"
    ]
    append(web, cri_line('{"msg":"parsed"}'))
    drain(agent)
    assert sink.messages() == ["parsed"]


def test_what_needs_a_restart_is_said_and_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    agent, _, config_file, clock = started(tmp_path, "max_open_files: 10\n")
    config_file.write_text("max_open_files: 20\nparser: none\n")
    clock.now += 3
    with caplog.at_level(logging.INFO):
        agent.maybe_reload()
    assert agent.config.max_open_files == 10
    assert agent.config.parser == "none"
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "max_open_files take effect only at a restart" in said


def test_sighup_reloads_a_running_collector(tmp_path: Path) -> None:
    web = pod_log(tmp_path, "web")
    append(web, cri_line('{"msg":"before"}'))
    config_file = tmp_path / "collector.yaml"
    config_file.write_text("parser: auto\n")
    out = tmp_path / "out.jsonl"
    collector = subprocess.Popen(
        [sys.executable, "-m", "collector", "--config", str(config_file), "--sink", f"file:{out}",
         "--log-root", str(tmp_path / "log"), "--docker-root", str(tmp_path / "docker"),
         "--state-dir", str(tmp_path / "state"), "--metrics-port", "0"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE,
    )  # fmt: skip

    def messages() -> list[str]:
        lines = out.read_bytes().splitlines() if out.exists() else []
        return [orjson.loads(line)["message"] for line in lines]

    def wait_for(count: int) -> list[str]:
        deadline = time.monotonic() + 60
        while len(messages()) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return messages()

    try:
        assert wait_for(1) == ["before"]
        # The same mtime second and size: only the signal can tell.
        stat = config_file.stat()
        config_file.write_text("parser: none\n")
        os.utime(config_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        collector.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert collector.stderr is not None
            line = collector.stderr.readline()
            if b"config reload: parser changed" in line or not line:
                break
        append(web, cri_line('{"msg":"after"}'))
        assert wait_for(2) == ["before", '{"msg":"after"}']
    finally:
        collector.send_signal(signal.SIGTERM)
        collector.wait(60)


def test_a_new_rate_limit_and_read_quantum_are_taken_in_place(tmp_path: Path) -> None:
    web = pod_log(tmp_path, "web")
    agent, sink, config_file, clock = started(tmp_path, "rate_limit: 50/s\n")
    append(web, *(cri_line(f"line {n}") for n in range(1000)))
    agent.scan()
    agent.turn()
    assert len(sink.records) < 1000
    # The node's limit lifted: the rest comes at once, a quantum at a time.
    config_file.write_text("rate_limit: none\nread_quantum: 1MiB\n")
    clock.now += 3
    agent.maybe_reload()
    for _ in range(5):
        agent.turn()
    assert sink.messages() == [f"line {n}" for n in range(1000)]
