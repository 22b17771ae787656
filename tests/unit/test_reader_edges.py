"""Files whose lines are not finished: a first line that never ends must not hold back the
container's other files, and --once says what it left because its last line had no newline."""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson
import pytest

from tests.unit.logfiles import (
    ListSink,
    agent,
    append,
    cri_line,
    docker_container,
    docker_line,
    drain,
)
from tests.unit.test_collector_cli import collector

TORN = cri_line("torn first line")[:-1]
"""A first line the runtime began and never finished (no newline, under 4096 bytes)."""
ZEROS = b"\x00" * 512
"""What a node crash can leave of a file: its length written, its bytes not."""


def restarted_container(tmp: Path, old: bytes) -> tuple[Path, Path]:
    """A pod's container folder after a restart: the first instance's 0.log, then 1.log."""
    folder = tmp / "log" / "pods" / "shop_cart-7d9f_0f1e2d3c" / "app"
    folder.mkdir(parents=True)
    first, second = folder / "0.log", folder / "1.log"
    append(first, old)
    # The first instance's file is the older one, as it is when kubelet restarts a container.
    hour_ago = time.time() - 3600
    os.utime(first, (hour_ago, hour_ago))
    append(second, cri_line("instance 1 line 0"), cri_line("instance 1 line 1"))
    return first, second


def once(tmp: Path) -> tuple[list[str], list[dict[str, object]], int]:
    """`python -m collector --once` over `tmp`: messages, the lines it logged, its exit code."""
    # Both roots there, as on a node: a missing one is warned of.
    for root in ("docker", "log"):
        (tmp / root).mkdir(exist_ok=True)
    done = collector(
        "--once", "--sink", "stdout", "--docker-root", str(tmp / "docker"),
        "--log-root", str(tmp / "log"), "--state-dir", str(tmp / "state"),
        "--metrics-port", "0",
    )  # fmt: skip
    messages = [orjson.loads(line)["message"] for line in done.stdout.splitlines()]
    logged = [orjson.loads(line) for line in done.stderr.splitlines()[:-1]]
    return messages, logged, done.returncode


def test_a_first_line_never_finished_does_not_hold_back_the_next_file(tmp_path: Path) -> None:
    first, _ = restarted_container(tmp_path, TORN)
    sink = ListSink()
    a = agent(tmp_path, sink)
    drain(a)
    assert sink.messages() == ["instance 1 line 0", "instance 1 line 1"]
    # Should the line be finished after all, it is read then.
    append(first, b"\n", cri_line("instance 0 last line"))
    drain(a)
    assert sink.messages()[2:] == ["torn first line", "instance 0 last line"]


@pytest.mark.parametrize("old", [TORN, ZEROS], ids=["torn", "zeros"])
def test_once_ends_with_the_other_files_read_and_names_what_it_left(
    tmp_path: Path, old: bytes
) -> None:
    restarted_container(tmp_path, old)
    messages, logged, code = once(tmp_path)
    assert code == 0
    assert messages == ["instance 1 line 0", "instance 1 line 1"]
    warnings = [str(line["message"]) for line in logged if line["level"] == "warning"]
    assert warnings == [
        f"1 files, {len(old)} bytes left unread: their last line has no newline yet; "
        "they are read once it is finished"
    ]


def test_once_names_the_files_and_bytes_whose_last_line_has_no_newline(tmp_path: Path) -> None:
    docker_log = docker_container(tmp_path / "docker", "d" * 64)
    docker_last = docker_line("docker last")[:-1]
    append(docker_log, docker_line("docker first"), docker_last)
    pod = tmp_path / "log" / "pods" / "ns_pod_uid" / "app"
    pod.mkdir(parents=True)
    cri_last = cri_line("cri last")[:-1]
    append(pod / "0.log", cri_line("cri first"), cri_last)
    messages, logged, code = once(tmp_path)
    assert code == 0
    assert sorted(messages) == ["cri first", "docker first"]
    warnings = [str(line["message"]) for line in logged if line["level"] == "warning"]
    assert warnings == [
        f"2 files, {len(docker_last) + len(cri_last)} bytes left unread: their last line has "
        "no newline yet; they are read once it is finished"
    ]


def test_once_says_nothing_of_unfinished_lines_when_every_line_is_finished(
    tmp_path: Path,
) -> None:
    docker_log = docker_container(tmp_path / "docker", "d" * 64)
    append(docker_log, docker_line("docker first"), docker_line("docker last"))
    messages, logged, code = once(tmp_path)
    assert code == 0
    assert messages == ["docker first", "docker last"]
    assert [line for line in logged if line["level"] == "warning"] == []


@pytest.mark.parametrize(
    "head",
    [b"\x00" * 100, b"\xef\xbb\xbf", b"not json at all\n", b"\x00" * 100 + b"\n"],
    ids=["zeros", "byte-order mark", "a bad line", "a line of zeros"],
)
def test_a_docker_file_whose_first_bytes_are_bad_keeps_its_later_lines(
    tmp_path: Path, head: bytes
) -> None:
    """Only the bad bytes are a parse error: read as CRI for them, every later line of the
    file lost its time and stream."""
    docker_log = docker_container(tmp_path / "docker", "d" * 64)
    append(docker_log, head, docker_line("first"), docker_line("second", stream="stderr"))
    sink = ListSink()
    drain(agent(tmp_path, sink))
    good = [r for r in sink.records if "parse_error" not in r.get("tags", [])]
    assert [(r["message"], r["stream"]) for r in good][-2:] == [
        ("first", "stdout"),
        ("second", "stderr"),
    ]
    assert all(r["@timestamp"].startswith("2026-11-27T02:") for r in good[-2:])


@pytest.mark.parametrize("head", [b"\x00" * 100 + b"\n", b"\xef\xbb\xbf"], ids=["zeros", "bom"])
def test_a_cri_file_whose_first_bytes_are_bad_keeps_its_later_lines(
    tmp_path: Path, head: bytes
) -> None:
    pod = tmp_path / "log" / "pods" / "ns_pod_uid" / "app"
    pod.mkdir(parents=True)
    append(pod / "0.log", head, cri_line("first"), cri_line("second", stream="stderr"))
    sink = ListSink()
    drain(agent(tmp_path, sink))
    good = [r for r in sink.records if "parse_error" not in r.get("tags", [])]
    assert [(r["message"], r["stream"]) for r in good][-2:] == [
        ("first", "stdout"),
        ("second", "stderr"),
    ]
