"""The checkpoint file: what a run finds there, and what it does when it cannot write it."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from prometheus_client import REGISTRY

from collector.checkpoint import Checkpoints
from tests.unit.logfiles import ListSink, agent, append, docker_container, docker_line, drain


def saved(tmp: Path, entry: dict[str, object]) -> None:
    state = tmp / "state"
    state.mkdir(parents=True, exist_ok=True)
    (state / "checkpoints.json").write_bytes(orjson.dumps({"version": 1, "files": {"abc": entry}}))


@pytest.mark.parametrize(
    "entry",
    [
        {"offset": 10, "path": "/x", "seen": "yesterday"},
        {"offset": 10, "path": "/x", "seen": None},
        {"offset": -7, "path": "/x", "seen": 1.0},
        {"offset": "10", "path": "/x", "seen": 1.0},
        {"offset": 10.5, "path": "/x", "seen": 1.0},
        {"offset": True, "path": "/x", "seen": 1.0},
    ],
    ids=["seen-text", "seen-null", "offset-negative", "offset-text", "offset-float", "bool"],
)
def test_a_checkpoint_file_that_parses_but_holds_no_positions_is_set_aside(
    tmp_path: Path, entry: dict[str, object]
) -> None:
    """JSON of the wrong shape crashed the first save (`now - "yesterday"`) or the seek
    (offset -7) at every start, re-sending what was shipped each time."""
    saved(tmp_path, entry)
    checkpoints = Checkpoints(str(tmp_path / "state"))
    assert checkpoints.get("abc") is None
    assert (tmp_path / "state" / "checkpoints.json.unreadable").exists()
    checkpoints.save()


def test_a_state_folder_that_cannot_be_written_is_said_and_reading_goes_on(
    tmp_path: Path,
) -> None:
    """A full disk or a read-only state folder stopped the collector with a traceback (a
    restart loop in a pod): the checkpoint stays behind, said and counted, and records
    still ship."""
    log = docker_container(tmp_path / "docker", "c" * 64)
    append(log, docker_line("first"))
    sink = ListSink()
    collector = agent(tmp_path, sink)
    # Where the save writes first: a folder there makes every save fail.
    (tmp_path / "state").mkdir(exist_ok=True)
    (tmp_path / "state" / "checkpoints.json.tmp").mkdir()
    name = "logferry_collector_checkpoint_save_failures_total"
    before = REGISTRY.get_sample_value(name) or 0
    drain(collector)
    append(log, docker_line("second"))
    drain(collector)
    assert [r["message"] for r in sink.records] == ["first", "second"]
    assert (REGISTRY.get_sample_value(name) or 0) > before
    os.rmdir(tmp_path / "state" / "checkpoints.json.tmp")
    drain(collector)
    assert (tmp_path / "state" / "checkpoints.json").exists()
