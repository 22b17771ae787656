"""The agent's reads: fair across containers, throttled per pod without loss, asleep when idle."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from collector.agent import Agent
from collector.enrich import Enricher
from collector.tail import Tail
from harness.k8s_api import KubeAPI, pod
from harness.wait import until
from tests.servers import unavailable
from tests.unit.logfiles import ListSink, agent, append, cri_line


def cri_log(tmp: Path, ns: str, name: str, uid: str, container: str = "app") -> Path:
    folder = tmp / "log" / "pods" / f"{ns}_{name}_{uid}" / container
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "0.log"


@contextmanager
def running(a: Agent) -> Iterator[Agent]:
    """The agent's own loop in a thread, stopped at the end."""
    thread = threading.Thread(target=a.run, daemon=True)
    thread.start()
    try:
        yield a
    finally:
        a.stopping = True
        thread.join(30)


def behind(ns: str, name: str) -> float | None:
    return REGISTRY.get_sample_value(
        "logferry_collector_throttled_behind_bytes",
        {"namespace": ns, "pod": name, "container": "app"},
    )


def test_a_noisy_container_is_read_a_quantum_a_turn_and_the_quiet_ones_in_the_same_turn(
    tmp_path: Path,
) -> None:
    noisy = cri_log(tmp_path, "load", "noisy", "u-noisy")
    append(noisy, *(cri_line(f"noisy {n} " + "x" * 150) for n in range(20_000)))
    quiet = [cri_log(tmp_path, "apps", f"quiet-{n}", f"u-{n}") for n in range(10)]
    for n, path in enumerate(quiet):
        append(path, cri_line(f"quiet {n}"))
    sink = ListSink()
    a = agent(tmp_path, sink, "--read-quantum", "64KiB")
    a.scan()
    a.turn()
    messages = sink.messages()
    assert sorted(m for m in messages if m.startswith("quiet")) == [f"quiet {n}" for n in range(10)]
    noisy_read = [m for m in messages if m.startswith("noisy")]
    assert 0 < len(noisy_read) <= 64 * 1024 // 150
    # The noisy container is not starved either: it goes on a quantum at a time.
    a.turn()
    assert len([m for m in sink.messages() if m.startswith("noisy")]) > len(noisy_read)


def test_a_quiet_line_written_while_a_noisy_container_keeps_the_agent_busy_is_read_next_turn(
    tmp_path: Path,
) -> None:
    noisy = cri_log(tmp_path, "load", "noisy", "u-noisy")
    append(noisy, *(cri_line(f"noisy {n} " + "x" * 150) for n in range(20_000)))
    quiet = cri_log(tmp_path, "apps", "quiet", "u-quiet")
    append(quiet, cri_line("first"))
    sink = ListSink()
    # No scan will come: only the file's own event can bring the quiet container back.
    a = agent(
        tmp_path, sink, "--inotify", "true", "--read-quantum", "64KiB", "--rescan-interval", "1h"
    )
    a.scan()
    for _ in range(2):
        # The second turn finds nothing more in the quiet file: it waits for an event.
        assert a.turn()
        a.wait(True)
    assert "first" in sink.messages()
    append(quiet, cri_line("second"))
    for _ in range(3):
        assert a.turn()
        a.wait(True)
    assert [m for m in sink.messages() if m.startswith(("first", "second"))] == [
        "first",
        "second",
    ]


def test_an_idle_agent_reads_no_file_until_one_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [cri_log(tmp_path, "apps", f"pod-{n}", f"u-{n}") for n in range(50)]
    for path in paths:
        append(path, cri_line("hello"))
    sink = ListSink()
    a = agent(tmp_path, sink, "--inotify", "true")
    if a.open_files.wakeup.polling:
        unavailable("no inotify on this machine")
    a.scan()
    while a.turn():
        pass
    reads: list[Tail] = []
    real = Tail.read

    def counted(self: Tail, limit: int) -> Any:
        reads.append(self)
        return real(self, limit)

    monkeypatch.setattr(Tail, "read", counted)
    for _ in range(20):
        a.wait(False)
        a.turn()
    assert reads == []
    append(paths[7], cri_line("news"))
    a.wait(False)
    a.turn()
    assert len(reads) >= 1
    assert {t.ino for t in reads} == {os.stat(paths[7]).st_ino}
    assert sink.messages()[-1] == "news"


@pytest.mark.parametrize("inotify", ["true", "false"])
def test_lines_and_new_containers_arrive_while_the_agent_waits(
    tmp_path: Path, inotify: str
) -> None:
    first = cri_log(tmp_path, "apps", "one", "u-1")
    append(first, cri_line("before"))
    sink = ListSink()
    # Scans only when a folder changes: lines must come from events (or polling).
    a = agent(tmp_path, sink, "--inotify", inotify, "--rescan-interval", "1h")
    with running(a):
        until(lambda: sink.messages() == ["before"])
        append(first, cri_line("written later"))
        until(lambda: "written later" in sink.messages())
        second = cri_log(tmp_path, "apps", "two", "u-2")
        append(second, cri_line("a new container"))
        until(lambda: "a new container" in sink.messages())
        os.rename(first, first.with_name("0.log.20261201-000000"))
        fresh = first.with_name("0.log")
        append(fresh, cri_line("after rotation"))
        until(lambda: "after rotation" in sink.messages())
    assert sink.messages() == ["before", "written later", "a new container", "after rotation"]


def test_a_file_created_empty_and_written_later_is_found_without_a_rescan(tmp_path: Path) -> None:
    first = cri_log(tmp_path, "apps", "one", "u-1")
    append(first, cri_line("before"))
    # As kubelet leaves a new file at rotation, before the runtime writes to it: an empty
    # file is not opened, so only its folder can tell when it is written.
    empty = cri_log(tmp_path, "apps", "two", "u-2")
    empty.touch()
    sink = ListSink()
    a = agent(tmp_path, sink, "--inotify", "true", "--rescan-interval", "1h")
    with running(a):
        until(lambda: sink.messages() == ["before"])
        append(empty, cri_line("first words"))
        until(lambda: "first words" in sink.messages())


def test_a_rate_limited_pods_lines_all_arrive_later_in_order(tmp_path: Path) -> None:
    path = cri_log(tmp_path, "load", "chatty", "u-chatty")
    lines = [f"line {n} " + "y" * 40 for n in range(400)]
    append(path, *(cri_line(text) for text in lines))
    sink = ListSink()
    a = agent(tmp_path, sink, "--rate-limit", "100/s")
    a.scan()
    for _ in range(10):
        a.turn()
        if behind("load", "chatty"):
            break
    # Slowed, not dropped: the file holds the rest, and how much shows in the metric.
    assert 0 < len(sink.records) < len(lines)
    shown = behind("load", "chatty")
    assert shown is not None
    assert shown > 0
    with running(a):
        until(lambda: len(sink.records) >= len(lines))
        until(lambda: behind("load", "chatty") is None)
    assert sink.messages() == lines


def test_a_throttled_containers_rotated_and_deleted_file_is_still_read_to_its_end(
    tmp_path: Path,
) -> None:
    path = cri_log(tmp_path, "load", "rotor", "u-rotor")
    old = [f"old {n} " + "z" * 40 for n in range(300)]
    append(path, *(cri_line(text) for text in old))
    sink = ListSink()
    a = agent(tmp_path, sink, "--rate-limit", "100/s")
    a.scan()
    a.turn()
    assert len(sink.records) < len(old)
    # kubelet rotates and removes the file while the pod is throttled: the open descriptor
    # still holds its lines, which come before the new file's.
    rotated = path.with_name("0.log.20261201-000000")
    os.rename(path, rotated)
    append(path, cri_line("new file"))
    os.unlink(rotated)
    with running(a):
        until(lambda: "new file" in sink.messages())
    assert sink.messages() == [*old, "new file"]


def test_a_container_whose_pod_never_shows_is_read_once_its_metadata_wait_is_over(
    tmp_path: Path, enricher: Enricher
) -> None:
    path = cri_log(tmp_path, "apps", "ghost", "u-ghost")
    append(path, cri_line("nobody knows me"))
    sink = ListSink()
    # No event and no rescan will come after the wait: the container must not be forgotten.
    a = agent(
        tmp_path,
        sink,
        *("--inotify", "true", "--metadata-wait", "0.3", "--rescan-interval", "1h"),
        enricher=enricher,
    )
    with running(a):
        until(lambda: sink.messages() == ["nobody knows me"])
    assert sink.records[0]["tags"] == ["metadata_missing"]


def test_pod_annotations_set_the_limit_and_a_bad_one_is_counted_and_the_node_default_applies(
    tmp_path: Path, api: KubeAPI, enricher: Enricher, caplog: pytest.LogCaptureFixture
) -> None:
    pods = {
        "bad": pod("bad", "load", annotations={"logferry.io/rate-limit": "fast please"}),
        "free": pod("free", "load", annotations={"logferry.io/rate-limit": "none"}),
        "slow": pod("slow", "load", annotations={"logferry.io/rate-limit": "1KiB/s"}),
    }
    for name, obj in pods.items():
        api.add(obj)
        uid = obj["metadata"]["uid"]
        until(lambda uid=uid: enricher.lookup({"kubernetes.pod.uid": uid}))
        path = cri_log(tmp_path, "load", name, uid)
        append(path, *(cri_line(f"{name} {n} " + "w" * 40) for n in range(400)))
    invalid = "logferry_collector_rate_limit_invalid_total"
    before = REGISTRY.get_sample_value(invalid) or 0
    sink = ListSink()
    a = agent(tmp_path, sink, "--rate-limit", "100/s", enricher=enricher)
    with caplog.at_level(logging.WARNING, logger="collector.schedule"):
        a.scan()
        for _ in range(3):
            a.turn()
    got = {name: sum(m.startswith(f"{name} ") for m in sink.messages()) for name in pods}
    assert got["free"] == 400
    assert 0 < got["bad"] < 400
    assert 0 < got["slow"] < got["bad"]
    assert REGISTRY.get_sample_value(invalid) == before + 1
    assert "rate-limit" in caplog.text
    assert "fast please" in caplog.text


def test_a_throttled_container_loses_lines_only_past_the_deleted_files_bound_and_counts_them(
    tmp_path: Path,
) -> None:
    path = cri_log(tmp_path, "load", "rotor", "u-rotor")
    sink = ListSink()
    a = agent(tmp_path, sink, "--rate-limit", "100/s", "--max-deleted-files", "1")
    let_go = "logferry_collector_unread_bytes_let_go_total"
    before = REGISTRY.get_sample_value(let_go, {"reason": "deleted_limit"}) or 0
    written: list[str] = []
    for generation in ("a", "b"):
        lines = [f"{generation} {n} " + "z" * 40 for n in range(300)]
        append(path, *(cri_line(text) for text in lines))
        written += lines
        a.scan()
        a.turn()
        rotated = path.with_name(f"0.log.{generation}")
        os.rename(path, rotated)
        os.unlink(rotated)
    append(path, cri_line("current"))
    # Two deleted files held open, one allowed: the older one is let go, its unread bytes
    # counted; the rest arrives in order.
    a.scan()
    lost = (REGISTRY.get_sample_value(let_go, {"reason": "deleted_limit"}) or 0) - before
    assert lost > 0
    with running(a):
        until(lambda: "current" in sink.messages())
    got = sink.messages()
    assert got[-1] == "current"
    assert got[:-1] == [m for m in written if m in set(got)]
    assert [m for m in written if m.startswith("b ")] == [m for m in got if m.startswith("b ")]
    # Every line not delivered is in the count: `<time> stdout F <text>\n`.
    missing = [m for m in written if m not in set(got)]
    assert missing
    assert lost == sum(len(cri_line(m)) for m in missing)


def test_a_file_written_line_by_line_is_read_once_a_wake_delay_not_once_a_line(
    tmp_path: Path,
) -> None:
    path = cri_log(tmp_path, "apps", "steady", "u-steady")
    append(path, cri_line("first"))
    sink = ListSink()
    # Records stay in flight, as with a broker: that kept the agent going round at once.
    sink.hold = True
    a = agent(tmp_path, sink, "--inotify", "true", "--wake-delay", "0.2")
    reads: list[int] = []
    process = a.reader.process

    def counted(file: Any, chunk: Any, now: float) -> None:
        reads.append(chunk.data.count(b"\n") + 1)
        process(file, chunk, now)

    a.reader.process = counted  # type: ignore[method-assign]
    with running(a):
        until(lambda: sink.messages() == ["first"])
        reads.clear()
        started = time.monotonic()
        for n in range(200):
            append(path, cri_line(f"line {n}"))
            time.sleep(0.005)  # a runtime's pace, a line at a time
        writing = time.monotonic() - started
        until(lambda: len(sink.messages()) == 201)
    assert sink.messages()[1:] == [f"line {n}" for n in range(200)]
    # Each read after the first waited the wake delay: a busy machine only makes them fewer.
    assert sum(reads) == 200
    assert len(reads) <= writing / 0.2 + 2, reads
