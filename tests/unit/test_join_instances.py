"""A restarted container's runs, through the agent over real files.

kubelet gives each run of a CRI container its own file in the container's folder (`0.log`,
then `1.log` after a restart), and rotates a run's file into `0.log.<time>`. A line the
runtime split is joined across a rotation of one run, never into the next run: a container
that died mid-line (CRI-O's `P` line with no `F` after it) left that line unfinished for good.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.unit.logfiles import ListSink, agent, append, drain

T0 = "2026-11-27T02:00:00.000000001Z"
T1 = "2026-11-27T02:00:05.000000001Z"
FIRST = f"{T0} stdout F instance-0 line 1\n".encode()
DIED = f"{T0} stdout P instance-0 died mid-line: \n".encode()
STARTING = f"{T1} stdout F instance-1 starting\n".encode()
READY = f"{T1} stdout F instance-1 ready\n".encode()


def container_folder(tmp: Path) -> Path:
    folder = tmp / "log" / "pods" / "shop_cart-7d9f_0f1e2d3c" / "app"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def written_earlier(path: Path) -> None:
    """The dead run's file was last written before the next run's (kubelet's order)."""
    then = time.time() - 60
    os.utime(path, (then, then))


def shipped(sink: ListSink) -> list[tuple[str, str, str, int]]:
    """(message, time, file name, offset) of each record."""
    return [
        (
            r["message"],
            r["@timestamp"],
            os.path.basename(r["log"]["file"]["path"]),
            r["log"]["offset"],
        )
        for r in sink.records
    ]


@pytest.mark.parametrize("dead", ["0.log", "0.log.20261127-020000"], ids=["current", "rotated"])
def test_a_line_a_dead_run_left_unfinished_is_not_glued_to_the_next_run(
    tmp_path: Path, dead: str
) -> None:
    """Seen on main: one record `instance-0 died mid-line: instance-1 starting` at the offset
    in the dead run's file. The dead run's file may be one kubelet rotated just before."""
    folder = container_folder(tmp_path)
    append(folder / dead, FIRST, DIED)
    written_earlier(folder / dead)
    append(folder / "1.log", STARTING, READY)
    sink = ListSink()
    drain(agent(tmp_path, sink))
    assert shipped(sink) == [
        ("instance-0 line 1", T0, dead, 0),
        ("instance-0 died mid-line: ", T0, dead, len(FIRST)),
        ("instance-1 starting", T1, "1.log", 0),
        ("instance-1 ready", T1, "1.log", len(STARTING)),
    ]


def test_the_unfinished_line_is_shipped_once_across_restarts_of_the_collector(
    tmp_path: Path,
) -> None:
    """The collector is killed while it holds the dead run's last piece, before the next
    run's file exists, and again after it shipped both: each line reaches the sink once."""
    folder = container_folder(tmp_path)
    append(folder / "0.log", FIRST, DIED)
    written_earlier(folder / "0.log")
    sink = ListSink()
    drain(agent(tmp_path, sink))
    assert sink.messages() == ["instance-0 line 1"], "the piece is waiting for its rest"
    append(folder / "1.log", STARTING)
    drain(agent(tmp_path, sink))
    append(folder / "1.log", READY)
    again = agent(tmp_path, sink)
    drain(again)
    assert again.shutdown() == 0
    assert shipped(sink) == [
        ("instance-0 line 1", T0, "0.log", 0),
        ("instance-0 died mid-line: ", T0, "0.log", len(FIRST)),
        ("instance-1 starting", T1, "1.log", 0),
        ("instance-1 ready", T1, "1.log", len(STARTING)),
    ]


@pytest.mark.parametrize("tag", ["F", "P"], ids=["whole-frame", "cut-frame"])
def test_a_trace_a_dead_run_left_does_not_take_the_next_runs_first_lines(
    tmp_path: Path, tag: str
) -> None:
    """With a first-line rule every other line continues the record held: the JVM's start-up
    line in the next run continued the dead run's stack trace (also when the container died
    in the middle of a frame)."""
    folder = container_folder(tmp_path)
    append(
        folder / "0.log",
        f"{T0} stdout F 2026-11-27 02:00:00 ERROR request failed\n".encode(),
        f"{T0} stdout F java.lang.OutOfMemoryError: Java heap space\n".encode(),
        f"{T0} stdout {tag} \tat com.shop.Cart.add(Ca\n".encode(),
    )
    written_earlier(folder / "0.log")
    append(
        folder / "1.log",
        f"{T1} stdout F Picked up JAVA_TOOL_OPTIONS: -Xmx512m\n".encode(),
        f"{T1} stdout F 2026-11-27 02:00:06 INFO started\n".encode(),
    )
    sink = ListSink()
    a = agent(tmp_path, sink, "--multiline", r"shop/*/app=^\d{4}-\d{2}-\d{2} ")
    drain(a)
    assert a.shutdown() == 0
    assert [(m, p) for m, _, p, _ in shipped(sink)] == [
        (
            "2026-11-27 02:00:00 ERROR request failed\n"
            "java.lang.OutOfMemoryError: Java heap space\n"
            "\tat com.shop.Cart.add(Ca",
            "0.log",
        ),
        ("Picked up JAVA_TOOL_OPTIONS: -Xmx512m", "1.log"),
        ("2026-11-27 02:00:06 INFO started", "1.log"),
    ]


def test_what_a_dead_run_held_on_its_other_stream_goes_when_the_next_run_writes(
    tmp_path: Path,
) -> None:
    """The dead run left a piece on stderr, the next run writes on stdout only: the piece
    goes when the next run's first line comes, not --partial-timeout (60 s) later."""
    folder = container_folder(tmp_path)
    died_on_stderr = f"{T0} stderr P instance-0 died mid-error: \n".encode()
    append(folder / "0.log", FIRST, died_on_stderr)
    written_earlier(folder / "0.log")
    append(folder / "1.log", STARTING)
    sink = ListSink()
    drain(agent(tmp_path, sink))
    assert sorted(shipped(sink)) == sorted(
        [
            ("instance-0 line 1", T0, "0.log", 0),
            ("instance-0 died mid-error: ", T0, "0.log", len(FIRST)),
            ("instance-1 starting", T1, "1.log", 0),
        ]
    )
