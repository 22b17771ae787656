"""copytruncate: a log file emptied in place and written again, seen however late.

logrotate's copytruncate copies the file away, then truncates it to zero; the application
writes on from the start. The agent may look again only after the new content has grown past
where it had read, or to the very same size, and a line the runtime split may be held, half
joined, from the content that is gone.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.unit.logfiles import ListSink, agent, append, cri_line, drain

HOUR = 3600


def cri_file(tmp: Path) -> Path:
    folder = tmp / "log" / "pods" / "shop_cart-7d9f_0f1e2d3c" / "app"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "0.log"


def truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(0)


def written_an_hour_ago(path: Path) -> None:
    """Rotation comes long after the lines it rotates were written, as logrotate's daily
    run does: the file's modification time then tells the rewrite from the old content."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - HOUR * 10**9))


def test_new_content_longer_than_what_was_read_is_read_from_its_start(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    append(log, *(cri_line(f"old {n}") for n in range(5)))
    sink = ListSink()
    a = agent(tmp_path, sink)
    drain(a)
    truncate(log)
    append(log, *(cri_line(f"new line number {n}") for n in range(8)))
    drain(a)
    new = sink.records[5:]
    assert sink.messages() == [
        *(f"old {n}" for n in range(5)),
        *(f"new line number {n}" for n in range(8)),
    ]
    assert all("tags" not in r for r in sink.records)
    assert new[0]["log"]["offset"] == 0


def test_new_content_of_the_same_size_is_read(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    append(log, *(cri_line(f"old {n}") for n in range(5)))
    written_an_hour_ago(log)
    sink = ListSink()
    a = agent(tmp_path, sink)
    drain(a)
    size = log.stat().st_size
    truncate(log)
    append(log, *(cri_line(f"new {n}") for n in range(5)))
    assert log.stat().st_size == size
    drain(a)
    assert sink.messages() == [*(f"old {n}" for n in range(5)), *(f"new {n}" for n in range(5))]


def test_appended_lines_are_not_taken_for_new_content(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    append(log, *(cri_line(f"line {n}") for n in range(3)))
    sink = ListSink()
    a = agent(tmp_path, sink)
    drain(a)
    append(log, *(cri_line(f"line {n}") for n in range(3, 6)))
    drain(a)
    assert sink.messages() == [f"line {n}" for n in range(6)]


def test_a_piece_held_from_the_old_content_is_shipped_alone(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    append(log, cri_line("old 0"), cri_line("old piece without its end ", tag="P"))
    sink = ListSink()
    a = agent(tmp_path, sink)
    drain(a)
    truncate(log)
    append(log, cri_line("new 0"), cri_line("new 1"))
    drain(a)
    assert sink.messages() == ["old 0", "old piece without its end ", "new 0", "new 1"]
    piece, new = sink.records[1], sink.records[2]
    assert piece["log"]["offset"] == len(cri_line("old 0"))
    assert new["log"]["offset"] == 0
    assert piece["event"]["id"] != new["event"]["id"]


def test_after_a_restart_reading_resumes_where_the_new_content_was_read(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    append(log, cri_line("old 0"), cri_line("old piece without its end ", tag="P"))
    sink = ListSink()
    a = agent(tmp_path, sink)
    drain(a)
    truncate(log)
    # The new content is all on the other stream: nothing ends the old piece.
    append(log, cri_line("new 0", "stderr"))
    drain(a)
    append(log, *(cri_line(f"new {n}", "stderr") for n in range(1, 4)))
    drain(a)
    a.shutdown()
    again = ListSink()
    b = agent(tmp_path, again)
    drain(b)
    b.shutdown()
    assert sink.messages() == [
        "old 0",
        "old piece without its end ",
        *(f"new {n}" for n in range(4)),
    ]
    assert again.records == []


def test_once_ships_a_piece_of_the_old_content_under_an_id_of_its_own(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    append(log, cri_line("old 0"), cri_line("old piece without its end ", tag="P"))
    sink = ListSink()
    a = agent(tmp_path, sink, "--once")
    drain(a)
    truncate(log)
    # Lines as long as the old ones: the second starts where the old piece did.
    append(log, *(cri_line(f"new {n}", "stderr") for n in range(2)))
    drain(a)
    a.flush_held()
    by_message = {r["message"]: r for r in sink.records}
    assert sorted(by_message) == ["new 0", "new 1", "old 0", "old piece without its end "]
    piece, new = by_message["old piece without its end "], by_message["new 1"]
    assert piece["log"]["offset"] == new["log"]["offset"]
    assert piece["event"]["id"] != new["event"]["id"]
