"""Lines at the edges, through the agent over real files: over-long lines, text that is not
UTF-8, empty lines, and runtime pieces split by a rotation.

Each promise: one physical line is at most one record, and that record keeps the runtime's
time and stream; bytes cut or skipped are counted; a record the runtime split is never
shipped as two.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest
from prometheus_client import REGISTRY

from collector.decode import Line
from collector.join import Joiner, Record
from collector.multiline import rule_for
from tests.unit.logfiles import ListSink, agent, append, docker_container, drain

CID = "b" * 64
T1 = "2026-11-27T02:20:49.123456789Z"
T2 = "2026-11-27T02:20:50.000000001Z"
MiB = 1024 * 1024
CAP = 500_000
"""--max-record-bytes for these tests: under Kafka's 1 MB, so that it alone decides the cut."""


def counter(name: str) -> float:
    """A collector counter's value now (tests compare before and after; collector.join
    imports the module that registers them)."""
    value = REGISTRY.get_sample_value(f"logferry_collector_{name}_total")
    return value or 0.0


def cri_log(tmp: Path) -> Path:
    folder = tmp / "log" / "pods" / "shop_cart-7d9f_0f1e2d3c" / "app"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "0.log"


def docker_raw(log: str | bytes, stream: str = "stdout", time: str = T1) -> bytes:
    """A json-file line; `log` as bytes is put in as it is (already JSON string content)."""
    if isinstance(log, str):
        return orjson.dumps({"log": log, "stream": stream, "time": time}) + b"\n"
    return (
        b'{"log":"'
        + log
        + b'","stream":"'
        + stream.encode()
        + b'","time":"'
        + time.encode()
        + b'"}\n'
    )


def summary(sink: ListSink) -> list[tuple[str, str, str, list[str] | None]]:
    """(time, stream, message start, tags) of each record."""
    return [(r["@timestamp"], r["stream"], r["message"][:20], r.get("tags")) for r in sink.records]


# --- long lines ---------------------------------------------------------------------------------


@pytest.mark.parametrize("newline", [True, False], ids=["whole", "runtime-piece"])
def test_a_3_mb_docker_line_is_one_record_with_its_time_and_stream(
    tmp_path: Path, newline: bool
) -> None:
    """Seen on main: two records, ~1 MiB in neither, the second a parse_error with the
    ingest time. A piece without its newline is joined with the piece that ends it."""
    log = docker_container(tmp_path / "docker", CID)
    big = "x" * (3 * MiB)
    lines = [docker_raw("before\n"), docker_raw(big + ("\n" if newline else ""), "stderr")]
    if not newline:
        lines.append(docker_raw("end of it\n", "stderr", T2))
    append(log, *lines, docker_raw("after\n", time=T2))
    cut_before, records_before = counter("truncated_bytes"), counter("truncated_records")
    sink = ListSink()
    drain(agent(tmp_path, sink, "--max-record-bytes", str(CAP)))
    assert summary(sink) == [
        (T1, "stdout", "before", None),
        (T1, "stderr", "x" * 20, ["truncated"]),
        (T2, "stdout", "after", None),
    ]
    assert sink.records[1]["message"] == "x" * CAP
    assert sink.records[1]["log"]["offset"] == len(lines[0])
    # Every byte of text past the cut is counted.
    assert counter("truncated_bytes") - cut_before >= len(big) - CAP
    assert counter("truncated_records") - records_before == 1


def test_a_long_docker_line_cut_inside_an_escape_keeps_whole_characters(tmp_path: Path) -> None:
    log = docker_container(tmp_path / "docker", CID)
    text = 'é😀\t"\\' * MiB
    append(log, docker_raw(text + "\n"), docker_raw("after\n", time=T2))
    sink = ListSink()
    drain(agent(tmp_path, sink, "--max-record-bytes", "100000"))
    first, after = sink.records
    assert first["tags"] == ["truncated"]
    assert first["@timestamp"] == T1
    # Cut at max-record bytes, at a character's edge.
    assert 100000 - 4 < len(first["message"].encode()) <= 100000
    assert text.startswith(first["message"])
    assert after["message"] == "after"


def test_a_long_cri_line_is_one_record_with_its_time(tmp_path: Path) -> None:
    log = cri_log(tmp_path)
    append(
        log,
        f"{T1} stdout F before\n".encode(),
        f"{T1} stderr F ".encode() + "日本".encode() * MiB + b"\n",
        f"{T2} stdout F after\n".encode(),
    )
    sink = ListSink()
    drain(agent(tmp_path, sink, "--max-record-bytes", str(CAP)))
    assert summary(sink) == [
        (T1, "stdout", "before", None),
        (T1, "stderr", "日本" * 10, ["truncated"]),
        (T2, "stdout", "after", None),
    ]
    message = sink.records[1]["message"]
    assert ("日本" * MiB).startswith(message)
    assert CAP - 4 < len(message.encode()) <= CAP


def test_a_cri_line_of_many_pieces_is_one_record(tmp_path: Path) -> None:
    log = cri_log(tmp_path)
    piece = b"p" * 16384
    append(
        log,
        *(f"{T1} stdout P ".encode() + piece + b"\n" for _ in range(300)),
        f"{T1} stdout F last\n".encode(),
        f"{T2} stdout F after\n".encode(),
    )
    sink = ListSink()
    drain(agent(tmp_path, sink, "--max-record-bytes", str(CAP)))
    assert summary(sink) == [
        (T1, "stdout", "p" * 20, ["truncated"]),
        (T2, "stdout", "after", None),
    ]
    assert sink.records[0]["message"] == "p" * CAP


RSS_PROBE = """
import os, resource, sys
from pathlib import Path
sys.path.insert(0, os.getcwd())
from tests.unit.logfiles import ListSink, agent, drain

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

root = Path(sys.argv[1])
kind = sys.argv[2]
if kind == "docker":
    folder = root / "docker" / ("c" * 64)
    path = folder / ("c" * 64 + "-json.log")
else:
    folder = root / "log" / "pods" / "shop_big_uid" / "app"
    path = folder / "0.log"
folder.mkdir(parents=True)
small = (
    b'{"log":"warm\\\\n","stream":"stdout","time":"2026-11-27T02:20:49Z"}\\n'
    if kind == "docker"
    else b"2026-11-27T02:20:49Z stdout F warm\\n"
)
path.write_bytes(small * 2000)
sink = ListSink()
a = agent(root, sink)
drain(a)
sink.records.clear()
before = peak()
block = b"y" * (1024 * 1024)
with open(path, "ab") as f:
    if kind == "docker":
        f.write(b'{"log":"')
        for _ in range(100):
            f.write(block)
        f.write(b'\\\\n","stream":"stderr","time":"2026-11-27T02:20:50Z"}\\n')
    elif kind == "cri":
        f.write(b"2026-11-27T02:20:50Z stderr F ")
        for _ in range(100):
            f.write(block)
        f.write(b"\\n")
    else:
        piece = b"2026-11-27T02:20:50Z stderr P " + block[:16384] + b"\\n"
        for _ in range(6400):
            f.write(piece)
        f.write(b"2026-11-27T02:20:50Z stderr F y\\n")
    f.write(small)
drain(a)
records = [(r["stream"], r["@timestamp"], r["message"][:3], r.get("tags")) for r in sink.records]
print(peak() - before, records)
"""


@pytest.mark.parametrize("kind", ["docker", "cri", "cri-pieces"])
def test_a_100_mb_line_does_not_raise_memory_by_more_than_a_few_mib(
    tmp_path: Path, kind: str
) -> None:
    """The line is read past, not held: peak RSS of a fresh process grows by little. As
    CRI pieces (6,400 of 16 KiB) it is joined up to max-record and the rest let go."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(RSS_PROBE), str(tmp_path), kind],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert done.returncode == 0, done.stderr
    grown, records = done.stdout.split(" ", 1)
    assert records.strip() == (
        "[('stderr', '2026-11-27T02:20:50Z', 'yyy', ['truncated']), "
        "('stdout', '2026-11-27T02:20:49Z', 'war', None)]"
    )
    assert int(grown) < 12 * MiB, f"peak RSS grew by {int(grown) / MiB:.1f} MiB"


# --- encodings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (docker_raw(b"a\\ud800b\\n", "stderr"), "a\ufffdb"),
        (docker_raw(b"a\\udc00\\\\ud800\\n", "stderr"), "a\ufffd\\ud800"),
        (docker_raw(b"caf\xe9 \\ud83d\\ude00\\n", "stderr"), "caf\ufffd 😀"),
        (f"{T1} stderr F caf".encode() + b"\xe9\n", "caf\ufffd"),
    ],
    ids=["lone-surrogate", "escaped-backslash", "invalid-byte", "cri-invalid-byte"],
)
def test_text_that_is_not_utf8_is_replaced_and_tagged_keeping_time_and_stream(
    tmp_path: Path, raw: bytes, message: str
) -> None:
    """Seen on main: a parse_error record with the ingest time and stream stdout."""
    log = docker_container(tmp_path / "docker", CID) if raw[:1] == b"{" else cri_log(tmp_path)
    after = docker_raw("ok\n", time=T2) if raw[:1] == b"{" else f"{T2} stdout F ok\n".encode()
    append(log, raw, after)
    invalid = counter("invalid_utf8_records")
    errors = counter("parse_errors")
    sink = ListSink()
    drain(agent(tmp_path, sink))
    assert [(r["@timestamp"], r["stream"], r["message"], r.get("tags")) for r in sink.records] == [
        (T1, "stderr", message, ["invalid_utf8"]),
        (T2, "stdout", "ok", None),
    ]
    assert counter("invalid_utf8_records") - invalid == 1
    assert counter("parse_errors") == errors


def test_empty_lines_are_counted_not_shipped(tmp_path: Path) -> None:
    log = docker_container(tmp_path / "docker", CID)
    append(log, b"\n", docker_raw("one\n"), b"\n\n", docker_raw("two\n", time=T2), b"\n")
    empty = counter("empty_lines")
    sink = ListSink()
    drain(agent(tmp_path, sink))
    assert sink.messages() == ["one", "two"]
    assert counter("empty_lines") - empty == 4


# --- rotation between pieces ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["docker", "cri"])
def test_a_piece_at_the_end_of_a_rotated_file_is_joined_with_the_new_file(
    tmp_path: Path, kind: str
) -> None:
    """The runtime rotated between two pieces of one line and the new file came later than
    the join timeout (here 0 s: any turn is late). Seen on main: two records, each half."""
    first, second = "a" * 16384, "b" * 100
    if kind == "docker":
        log = docker_container(tmp_path / "docker", CID)
        before, head = docker_raw("before\n"), docker_raw(first)
        tail, after = docker_raw(second + "\n"), docker_raw("after\n", time=T2)
        rotated = Path(f"{log}.1")
    else:
        log = cri_log(tmp_path)
        before, head = f"{T1} stdout F before\n".encode(), f"{T1} stdout P {first}\n".encode()
        tail, after = f"{T1} stdout F {second}\n".encode(), f"{T2} stdout F after\n".encode()
        rotated = Path(f"{log}.20261127-022049")
    append(log, before, head)
    sink = ListSink()
    a = agent(tmp_path, sink, "--multiline-timeout", "0")
    drain(a)
    os.rename(log, rotated)
    drain(a)
    assert sink.messages() == ["before"], "half a record was let go"
    append(log, tail, after)
    drain(a)
    assert sink.messages() == ["before", first + second, "after"]
    assert sink.records[1]["@timestamp"] == T1
    assert sink.records[1]["log"] == {"file": {"path": str(rotated)}, "offset": len(before)}


def piece(text: str, partial: bool, stream: str = "stdout") -> Line:
    return Line(T1, stream, partial, text)


def test_the_join_timeout_never_lets_a_runtime_piece_go_alone() -> None:
    """Seen on main: a piece that waited the (multi-line) join timeout was shipped, and the
    piece that ended it a moment later became a second record."""
    joiner = Joiner(None, 2**20, timeout=1.0, partial_timeout=60.0)
    out: list[Record] = []
    joiner.push("old", 0, piece("first half ", True), out)
    joiner.expire(59.0, out)
    assert out == []
    joiner.now = 59.0
    joiner.push("new", 0, piece("second half", False), out)
    assert [(r.source, r.offset, r.text) for r in out] == [("old", 0, "first half second half")]


def test_a_piece_whose_rest_never_comes_goes_after_the_partial_timeout_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """CRI-O writes a P line for output without a newline and no F when the container
    exits: such a line is held no longer than partial_timeout."""
    joiner = Joiner(None, 2**20, timeout=1.0, partial_timeout=60.0)
    out: list[Record] = []
    before = counter("partial_timeouts")
    joiner.push("f", 7, piece("Password: ", True), out)
    joiner.expire(30.0, out, behind=True)
    joiner.expire(89.0, out)
    assert out == []
    joiner.expire(90.0, out)
    assert [(r.offset, r.text, r.tags) for r in out] == [(7, "Password: ", ())]
    assert counter("partial_timeouts") - before == 1
    assert "waited 60 s for its last piece" in caplog.text
    assert not joiner.holding()


def test_the_multiline_timeout_does_not_count_while_the_agent_is_behind() -> None:
    """A trace's next line may be in the bytes not read yet: waiting for the reader is not
    the application pausing. Seen on main: the trace was cut in two."""
    joiner = Joiner(rule_for("java"), 2**20, timeout=1.0)
    out: list[Record] = []
    joiner.push("f", 0, piece("java.lang.IllegalStateException: boom", False), out)
    joiner.expire(5.0, out, behind=True)
    joiner.expire(5.5, out)
    assert out == []
    joiner.now = 5.6
    joiner.push("f", 40, piece("\tat com.shop.Cart.add(Cart.java:12)", False), out)
    joiner.expire(6.7, out)
    assert [(r.text, r.tags) for r in out] == [
        (
            "java.lang.IllegalStateException: boom\n\tat com.shop.Cart.add(Cart.java:12)",
            ("multiline",),
        )
    ]


@pytest.mark.parametrize("kind", ["docker", "cri"])
def test_a_piece_held_when_the_agent_stops_is_joined_after_the_restart(
    tmp_path: Path, kind: str
) -> None:
    """Seen on main: stopping shipped the first piece alone and moved the checkpoint past
    it; after the restart the rest of the line was a second record."""
    if kind == "docker":
        log = docker_container(tmp_path / "docker", CID)
        before, head = docker_raw("before\n"), docker_raw("a" * 16384)
        tail = docker_raw("b" * 10 + "\n")
    else:
        log = cri_log(tmp_path)
        before, head = f"{T1} stdout F before\n".encode(), f"{T1} stdout P {'a' * 16384}\n".encode()
        tail = f"{T1} stdout F {'b' * 10}\n".encode()
    append(log, before, head)
    sink = ListSink()
    first = agent(tmp_path, sink)
    drain(first)
    assert first.shutdown() == 0
    append(log, tail)
    drain(agent(tmp_path, sink))
    assert sink.messages() == ["before", "a" * 16384 + "b" * 10]
    assert sink.records[1]["log"]["offset"] == len(before)


def test_once_still_ships_a_piece_left_at_the_end(tmp_path: Path) -> None:
    """--once reads every file to its current end: what it holds there is shipped."""
    log = cri_log(tmp_path)
    append(log, f"{T1} stdout P never ended\n".encode())
    sink = ListSink()
    once = agent(tmp_path, sink, "--once")
    drain(once)
    assert once.shutdown() == 0
    assert sink.messages() == ["never ended"]


@pytest.mark.parametrize("split", ["trace", "piece"])
def test_a_record_held_across_a_rotation_is_whole_after_a_kill(tmp_path: Path, split: str) -> None:
    """A record begun in the rotated file and continued in the current one, held when the
    collector is killed: the current file's checkpoint must not pass the lines the held
    record took from it, or the next run ships the record without them (seen as `lost 2,
    doubled 2` in the kill -9 e2e test)."""
    log = cri_log(tmp_path)
    if split == "trace":
        head = [
            f"{T1} stdout F java.lang.IllegalStateException: boom\n".encode(),
            f"{T1} stdout F \tat com.shop.Cart.add(Cart.java:12)\n".encode(),
        ]
        rest = f"{T1} stdout F \tat com.shop.Main.main(Main.java:5)\n".encode()
        whole = (
            "java.lang.IllegalStateException: boom\n"
            "\tat com.shop.Cart.add(Cart.java:12)\n"
            "\tat com.shop.Main.main(Main.java:5)"
        )
        end = b""
    else:
        head = [f"{T1} stdout P {'a' * 100}\n".encode()]
        rest = f"{T1} stdout P {'b' * 100}\n".encode()
        end = f"{T1} stdout F {'c' * 10}\n".encode()
        whole = "a" * 100 + "b" * 100 + "c" * 10
    append(log, f"{T1} stdout F before\n".encode(), *head)
    os.rename(log, log.with_name("0.log.20261127-022049"))
    append(log, rest)
    flags = ("--multiline", "shop/*/app=java")
    sink = ListSink()
    # Killed: what the run read and had acknowledged is checkpointed, nothing is flushed.
    drain(agent(tmp_path, sink, *flags))
    assert whole.split("\n")[0] not in sink.messages(), "held at the kill"
    append(log, end, f"{T2} stdout F after\n".encode())
    again = agent(tmp_path, sink, *flags)
    drain(again)
    assert again.shutdown() == 0
    assert sink.messages() == ["before", whole, "after"]


CJK = "日本語のログ" * 500
"""3,000 characters, 9,000 bytes of UTF-8."""


@pytest.mark.parametrize("way", ["whole", "pieces", "multiline"])
@pytest.mark.parametrize("limit", [1000, 4000, 4001])
def test_max_record_bytes_counts_bytes_not_characters(way: str, limit: int) -> None:
    """--max-record-bytes is bytes (the help, the README and truncated_bytes say so): text
    of three bytes a character was let through at three times the limit."""
    rule = rule_for("java") if way == "multiline" else None
    joiner = Joiner(rule, limit, timeout=3600.0)
    out: list[Record] = []
    stamp = "2026-11-30T10:00:00Z"
    if way == "pieces":
        for n in range(3):
            joiner.push(None, n, Line(stamp, "stdout", n < 2, CJK[n * 1000 : (n + 1) * 1000]), out)
    elif way == "multiline":
        first = "Exception in thread main: " + CJK[:1000]
        joiner.push(None, 0, Line(stamp, "stdout", False, first), out)
        joiner.push(None, 1, Line(stamp, "stdout", False, "\tat " + CJK[1000:]), out)
    else:
        joiner.push(None, 0, Line(stamp, "stdout", False, CJK), out)
    joiner.expire(0.0, out, force=True)
    (record,) = out
    size = len(record.text.encode())
    assert size <= limit
    assert size > limit - 4, "cut at a character's edge, not sooner"
    assert "truncated" in record.tags
