"""A file's life after the agent opened it: kubelet's gzip, exclusion, deletion while held."""

from __future__ import annotations

import gzip
import os
import random
import shutil
import string
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from collector import checkpoint
from collector.enrich import Enricher
from collector.gztail import BLOCK, GzipTail
from collector.metrics import METRICS
from collector.schedule import READ_QUANTUM as READ_SIZE
from tests.unit.logfiles import (
    ListSink,
    agent,
    append,
    cri_line,
    docker_container,
    docker_line,
    drain,
)


def cri_file(tmp: Path, container: str = "app", pod: str = "shop_cart-7d9f_0f1e2d3c") -> Path:
    folder = tmp / "log" / "pods" / pod / container
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "0.log"


def lines(first: int, last: int, seed: int = 7) -> list[bytes]:
    """Varied text (a log compresses, but not to nothing), about 200 bytes a line."""
    rng = random.Random(seed * 1_000_003 + first)
    alphabet = string.ascii_letters + string.digits + " =:/"
    return [
        cri_line(f"line {n} " + "".join(rng.choices(alphabet, k=rng.randint(20, 380))))
        for n in range(first, last)
    ]


def gzip_like_kubelet(rotated: Path) -> Path:
    """kubelet: compress into .tmp, rename to .gz, unlink the original."""
    tmp = Path(f"{rotated}.tmp")
    with open(rotated, "rb") as src, gzip.open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst)
    gz = Path(f"{rotated}.gz")
    os.rename(tmp, gz)
    os.unlink(rotated)
    return gz


def seen(records: list[dict[str, Any]]) -> list[tuple[str, int, str, str]]:
    return [(r["event"]["id"], r["log"]["offset"], r["@timestamp"], r["message"]) for r in records]


def numbers(sink: ListSink) -> list[int]:
    return [int(m.split()[1]) for m in sink.messages()]


def test_the_rest_of_a_file_gzipped_while_stopped_comes_from_the_gz(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    append(log, *lines(0, 3000))
    drain(agent(tmp_path, ListSink()))
    # Written after the collector stopped; then rotated twice, so kubelet gzipped it.
    append(log, *lines(3000, 12000))
    rotated = Path(f"{log}.20261127-022049")
    os.rename(log, rotated)
    append(log, *lines(12000, 12010))
    # What reading the original would have given, from a copy of the state.
    shutil.copytree(tmp_path / "state", tmp_path / "reference-state")
    reference = ListSink()
    drain(agent(tmp_path, reference, "--state-dir", str(tmp_path / "reference-state")))
    gz = gzip_like_kubelet(rotated)
    newer = Path(f"{log}.20261127-022052")
    os.rename(log, newer)
    append(log, *lines(12010, 12020))

    sink = ListSink()
    a = agent(tmp_path, sink)
    drain(a)
    assert numbers(sink) == list(range(3000, 12020))
    from_gz = [r for r in sink.records if r["log"]["file"]["path"] == str(gz)]
    assert seen(from_gz) == seen(reference.records[: len(from_gz)])
    assert len(from_gz) == 9000
    assert all(f.path != str(gz) for f in a.files.values()), "the .gz is let go once read"

    again = ListSink()
    drain(agent(tmp_path, again))
    assert again.records == []


def test_a_gz_resumes_at_its_own_checkpoint_after_a_second_restart(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    append(log, *lines(0, 10))
    drain(agent(tmp_path, ListSink()))
    append(log, *lines(10, 5000))
    rotated = Path(f"{log}.20261127-022049")
    os.rename(log, rotated)
    gzip_like_kubelet(rotated)
    # Stopped after reading part of the .gz: only what Kafka acknowledged counts.
    sink = ListSink()
    a = agent(tmp_path, sink)
    a.scan()
    a.turn()
    first = len(sink.records)
    assert 0 < first < 4990
    a.save()
    unacked = ListSink()
    unacked.hold = True
    b = agent(tmp_path, unacked)
    b.scan()
    b.turn()
    b.save()
    rest = ListSink()
    drain(agent(tmp_path, rest))
    assert numbers(sink)[:first] + numbers(rest) == list(range(10, 5000))
    assert seen(rest.records[: len(unacked.records)]) == seen(unacked.records)


def test_a_gz_read_to_its_end_before_the_restart_is_not_read_again(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    append(log, *lines(0, 100))
    drain(agent(tmp_path, ListSink()))
    rotated = Path(f"{log}.20261127-022049")
    os.rename(log, rotated)
    append(log, *lines(100, 110))
    gzip_like_kubelet(rotated)
    sink = ListSink()
    drain(agent(tmp_path, sink))
    assert numbers(sink) == list(range(100, 110))


def test_a_gz_never_started_is_not_read(tmp_path: Path) -> None:
    """History from before the collector knew the file: only the files themselves are read."""
    log = cri_file(tmp_path)
    append(log, *lines(0, 100))
    rotated = Path(f"{log}.20261127-022049")
    os.rename(log, rotated)
    gzip_like_kubelet(rotated)
    append(log, *lines(100, 110))
    sink = ListSink()
    drain(agent(tmp_path, sink))
    assert numbers(sink) == list(range(100, 110))


def now_lines(first: int, last: int) -> list[bytes]:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f001Z")
    return [f"{stamp} stdout F line {n}\n".encode() for n in range(first, last)]


@pytest.mark.parametrize("first", ["short", "long"])
def test_a_file_born_and_gzipped_while_stopped_is_read_whole_from_its_gz(
    tmp_path: Path, first: str
) -> None:
    known = cri_file(tmp_path, "known")
    append(known, *now_lines(0, 5))
    drain(agent(tmp_path, ListSink()))
    # Born after the collector's last save, rotated twice before it came back.
    log = cri_file(tmp_path)
    if first == "long":
        # A first line longer than the fingerprint's 4 KiB, cut there inside a character.
        stamp = now_lines(0, 1)[0].split(b" ", 1)[0]
        piece = stamp + b" stdout P line 4 " + "é".encode() * 8000 + b"\n"
        append(log, piece, stamp + b" stdout F end\n")
    append(log, *now_lines(5, 1000))
    rotated = Path(f"{log}.20261127-022049")
    os.rename(log, rotated)
    append(log, *now_lines(1000, 1010))
    gzip_like_kubelet(rotated)
    sink = ListSink()
    drain(agent(tmp_path, sink))
    assert numbers(sink) == [4] * (first == "long") + list(range(5, 1010))


def test_on_a_nodes_first_run_a_file_rotated_and_gzipped_between_scans_is_read(
    tmp_path: Path,
) -> None:
    """No checkpoint yet: a .gz written since this run began is no history. With the
    cut-off taken from a previous save only, kubelet rotating faster than the scans lost
    whole files on the first run (80 of 141 lines)."""
    log = cri_file(tmp_path)
    append(log, *now_lines(0, 10))
    sink = ListSink()
    a = agent(tmp_path, sink)
    drain(a)
    append(log, *now_lines(10, 20))
    os.rename(log, Path(f"{log}.20261127-022049"))
    append(log, *now_lines(20, 100))
    second = Path(f"{log}.20261127-022050")
    os.rename(log, second)
    gzip_like_kubelet(second)
    append(log, *now_lines(100, 110))
    drain(a)
    assert sorted(numbers(sink)) == list(range(110))


def test_a_gz_of_a_file_a_run_held_but_never_read_is_read_by_the_next(tmp_path: Path) -> None:
    """A run killed while its records still waited for the API's first answer read and
    saved nothing; kubelet then rotated and gzipped the file it held. The next run must take
    that .gz as written while a run was up, not as history from before the node's first
    run (tests/e2e/test_gzip_rotation.py lost the first seconds of every CRI container so,
    with the stand-in answering lists 6 s late)."""
    log = cri_file(tmp_path)
    append(log, *now_lines(0, 100))
    held = ListSink()
    # Never started: the API never answers, and --metadata-sync-wait is far away.
    drain(agent(tmp_path, held, enricher=Enricher("node-a")), turns=3)
    assert held.records == []
    rotated = Path(f"{log}.20261127-022049")
    os.rename(log, rotated)
    append(log, *now_lines(100, 110))
    gzip_like_kubelet(rotated)
    sink = ListSink()
    drain(agent(tmp_path, sink))
    assert numbers(sink) == list(range(0, 110))


def test_a_gz_older_than_the_last_run_without_a_checkpoint_is_not_read(
    tmp_path: Path,
) -> None:
    known = cri_file(tmp_path, "known")
    append(known, *now_lines(0, 5))
    drain(agent(tmp_path, ListSink()))
    # Written days before (the lines say so), by a container the collector never read.
    log = cri_file(tmp_path)
    append(log, *lines(5, 100))
    rotated = Path(f"{log}.20261127-022049")
    os.rename(log, rotated)
    gzip_like_kubelet(rotated)
    sink = ListSink()
    drain(agent(tmp_path, sink))
    assert sink.records == []


def test_a_gz_beside_its_original_is_read_once(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    append(log, *lines(0, 10))
    drain(agent(tmp_path, ListSink()))
    append(log, *lines(10, 2000))
    rotated = Path(f"{log}.20261127-022049")
    os.rename(log, rotated)
    # Restarted while kubelet had written the .gz but not yet removed the original.
    with open(rotated, "rb") as src, gzip.open(f"{rotated}.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    sink = ListSink()
    a = agent(tmp_path, sink)
    a.scan()
    a.turn()
    os.unlink(rotated)
    drain(a)
    assert numbers(sink) == list(range(10, 2000))


def test_a_gz_while_its_original_is_still_open_is_read_once(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    append(log, *lines(0, 10))
    sink = ListSink()
    sink.hold = True
    a = agent(tmp_path, sink)
    drain(a)
    append(log, *lines(10, 3000))
    rotated = Path(f"{log}.20261127-022049")
    os.rename(log, rotated)
    gzip_like_kubelet(rotated)
    a.scan()
    a.turn()
    sink.release()
    sink.hold = False
    drain(a)
    assert numbers(sink) == list(range(0, 3000))


@pytest.mark.parametrize("aged", [False, True])
def test_a_cut_gz_ships_what_it_holds_and_counts_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, aged: bool
) -> None:
    """`aged`: compressed long before the collector came back. Its torn end was then taken
    for a last line never finished: sent, and the file inflated again from its start."""
    log = cri_file(tmp_path)
    append(log, *lines(0, 10))
    drain(agent(tmp_path, ListSink()))
    append(log, *lines(10, 5000))
    rotated = Path(f"{log}.20261127-022049")
    os.rename(log, rotated)
    size = rotated.stat().st_size
    gz = gzip_like_kubelet(rotated)
    data = gz.read_bytes()
    gz.write_bytes(data[: len(data) * 2 // 3])
    if aged:
        hour_ago = time.time() - 3600
        os.utime(gz, (hour_ago, hour_ago))
    append(log, *lines(5000, 5010))
    files = METRICS.files_let_go.labels("unreadable")._value.get()
    unread = METRICS.unread_bytes_let_go.labels("unreadable")._value.get()
    sink = ListSink()
    a = agent(tmp_path, sink)
    drain(a)
    got = numbers(sink)
    assert got[-10:] == list(range(5000, 5010))
    assert got[:-10] == list(range(10, 10 + len(got) - 10))
    assert 1000 < len(got) < 4990
    assert METRICS.files_let_go.labels("unreadable")._value.get() == files + 1
    lost = METRICS.unread_bytes_let_go.labels("unreadable")._value.get() - unread
    read = sum(len(x) for x in lines(0, 10 + len(got) - 10))
    assert 0 < lost <= size - read
    assert any(str(gz) in r.getMessage() for r in caplog.records)
    assert all(f.path != str(gz) for f in a.files.values())


def let_go(reason: str) -> tuple[float, float]:
    return (
        METRICS.files_let_go.labels(reason)._value.get(),
        METRICS.unread_bytes_let_go.labels(reason)._value.get(),
    )


def held_content(n: int) -> tuple[list[bytes], list[bytes]]:
    """Container n's lines: those read before its file is deleted, those written after."""
    return lines(n * 100, n * 100 + 50), lines(n * 100 + 50, n * 100 + 60 + n)


def deleted_while_held(tmp_path: Path, *flags: str) -> tuple[Any, list[Path]]:
    """Four containers' files read while the broker does not acknowledge, written to, then
    deleted, oldest first."""
    sink = ListSink()
    sink.hold = True
    a = agent(tmp_path, sink, *flags)
    logs = [cri_file(tmp_path, pod=f"shop_cart-{n}_uid-{n}") for n in range(4)]
    for n, log in enumerate(logs):
        append(log, *held_content(n)[0])
    drain(a)
    for n, log in enumerate(logs):
        append(log, *held_content(n)[1])
        os.utime(log, (1_800_000_000 + n, 1_800_000_000 + n))
        log.unlink()
    return a, logs


@pytest.mark.parametrize("bound", ["files", "bytes"])
def test_past_the_bound_the_oldest_deleted_files_are_let_go(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, bound: str
) -> None:
    size = [sum(len(x) for x in held_content(n)[0] + held_content(n)[1]) for n in range(4)]
    unread = [sum(len(x) for x in held_content(n)[1]) for n in range(4)]
    if bound == "files":
        flags = ["--max-deleted-files", "2"]
    else:
        # Room for the two newest, not one byte more.
        flags = ["--max-deleted-bytes", str(size[2] + size[3])]
    before = let_go("deleted_limit")
    a, logs = deleted_while_held(tmp_path, *flags)
    a.scan()
    assert sorted(f.path for f in a.files.values()) == [str(logs[2]), str(logs[3])]
    assert let_go("deleted_limit") == (before[0] + 2, before[1] + unread[0] + unread[1])
    assert METRICS.deleted_open_files._value.get() == 2
    assert METRICS.deleted_open_bytes._value.get() == size[2] + size[3]
    for log, count in zip(logs[:2], unread[:2], strict=True):
        (said,) = [r.getMessage() for r in caplog.records if str(log) in r.getMessage()]
        assert f" {count} bytes unread" in said


def test_a_deleted_file_let_go_is_finished_from_its_gz_while_there_is_one(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    append(log, *lines(0, 100))
    sink = ListSink()
    sink.hold = True
    a = agent(tmp_path, sink, "--max-deleted-bytes", "1")
    drain(a)
    append(log, *lines(100, 200))
    rotated = Path(f"{log}.20261127-022049")
    os.rename(log, rotated)
    append(log, *lines(200, 210))
    gzip_like_kubelet(rotated)
    before = let_go("deleted_limit")
    a.scan()
    assert let_go("deleted_limit")[0] == before[0] + 1
    sink.release()
    sink.hold = False
    drain(a)
    # Read again from the last acknowledged record: same records, same ids, none missing.
    assert numbers(sink) == list(range(0, 100)) + list(range(0, 210))


def test_a_gz_stays_first_when_the_newer_rotated_file_is_gzipped_meanwhile(
    tmp_path: Path,
) -> None:
    log = cri_file(tmp_path)
    append(log, *lines(0, 10))
    drain(agent(tmp_path, ListSink()))
    append(log, *lines(10, 9000))
    first = Path(f"{log}.20261127-022049")
    os.rename(log, first)
    append(log, *lines(9000, 9100))
    second = Path(f"{log}.20261127-022052")
    os.rename(log, second)
    gzip_like_kubelet(first)
    append(log, *lines(9100, 9110))
    sink = ListSink()
    a = agent(tmp_path, sink)
    a.scan()
    a.turn()
    assert 0 < len(sink.records) < 8990, "stopped inside the first .gz"
    # kubelet's next rotation, while the agent reads the first .gz and holds the second open.
    gzip_like_kubelet(second)
    os.rename(log, Path(f"{log}.20261127-022055"))
    append(log, *lines(9110, 9120))
    drain(a)
    assert numbers(sink) == list(range(10, 9120))


def test_a_gz_of_an_open_file_not_yet_identified_is_not_read_again(tmp_path: Path) -> None:
    """The agent reads a container's files oldest first: a newer one waits, open but not yet
    identified, while an older .gz is read. kubelet gzipping it meanwhile must not make
    its .gz a second reader of the same lines."""
    known = cri_file(tmp_path, "known")
    append(known, *now_lines(0, 5))
    drain(agent(tmp_path, ListSink()))
    log = cri_file(tmp_path)
    append(log, *now_lines(0, 40000))
    first = Path(f"{log}.20261127-022049")
    os.rename(log, first)
    append(log, *now_lines(40000, 40100))
    second = Path(f"{log}.20261127-022052")
    os.rename(log, second)
    gzip_like_kubelet(first)
    append(log, *now_lines(40100, 40110))
    sink = ListSink()
    a = agent(tmp_path, sink)
    a.scan()
    a.turn()
    assert 0 < len(sink.records) < 40000, "stopped inside the first .gz"
    gzip_like_kubelet(second)
    os.rename(log, Path(f"{log}.20261127-022055"))
    append(log, *now_lines(40110, 40120))
    # Kafka acknowledges late: a file read to its end is not let go at once.
    sink.hold = True
    drain(a)
    sink.release()
    sink.hold = False
    drain(a)
    assert numbers(sink) == list(range(0, 40120))


def test_a_gz_is_read_as_its_original_in_bounded_steps(tmp_path: Path) -> None:
    original = b"".join(lines(0, 20000))
    gz = tmp_path / "0.log.20261127-022049.gz"
    # Two gzip members one after the other: still one content.
    cut = len(original) // 3
    gz.write_bytes(gzip.compress(original[:cut]) + gzip.compress(original[cut:]))
    tail = GzipTail.open(str(gz), str(tmp_path), 2 * READ_SIZE)
    try:
        tail.seek(12345)
        read = []
        while (chunk := tail.read(READ_SIZE)) is not None:
            read.append(chunk.data + b"\n")
            # Between reads only a partial line and less than a step of content are held.
            assert len(tail.out) <= BLOCK
        assert b"".join(read) == original[12345:]
        assert tail.size() == tail.offset == len(original)
        assert tail.problem is None
        # Back to an earlier offset: decompressed again from the start.
        tail.seek(0)
        again = tail.read(READ_SIZE)
        assert again is not None
        assert original.startswith(again.data)
        assert again.offset == 0
        assert len(again.data) > READ_SIZE // 2
    finally:
        tail.close()


def test_a_rotated_file_let_go_keeps_its_checkpoint_while_it_is_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Docker keeps `-json.log.1` and kubelet its newest rotated file for days: their
    checkpoints were forgotten a day after they were let go, and a restart then shipped
    them again whole."""
    log = cri_file(tmp_path)
    append(log, *lines(0, 50))
    sink = ListSink()
    a = agent(tmp_path, sink)
    drain(a)
    os.rename(log, Path(f"{log}.20261127-022049"))
    append(log, *lines(50, 60))
    drain(a)
    later = time.time() + 25 * 3600
    monkeypatch.setattr(checkpoint.time, "time", lambda: later)
    append(log, *lines(60, 65))
    drain(a)
    a.shutdown()
    again = ListSink()
    drain(agent(tmp_path, again))
    assert numbers(sink) == list(range(65))
    assert again.records == []


def test_files_past_max_open_files_are_each_read_in_turn(tmp_path: Path) -> None:
    """Files read to their end make room for those waiting: kept open until rotated, the
    files past the bound were never read (6 pods, --max-open-files 2: 20 of 30 lines)."""
    logs = [cri_file(tmp_path, pod=f"ns_pod-{p}_uid-{p}") for p in range(6)]
    for p, log in enumerate(logs):
        append(log, *[cri_line(f"pod {p} line {n}") for n in range(5)])
    sink = ListSink()
    a = agent(tmp_path, sink, "--max-open-files", "2")
    drain(a)
    assert sorted(sink.messages()) == sorted(
        f"pod {p} line {n}" for p in range(6) for n in range(5)
    )
    assert len(a.open_files.files) <= 2
    # Written again, a file let go waits its turn and is read from where it was left.
    append(logs[0], cri_line("pod 0 line 5"))
    drain(a)
    assert sink.messages()[30:] == ["pod 0 line 5"]


def test_a_rotated_file_whose_last_line_never_got_its_newline_sends_it_and_is_let_go(
    tmp_path: Path,
) -> None:
    """The runtime writes to the new file: the rotated one's last line stays as it was.
    Held back for its newline, it was never sent and its file held open for ever (as
    `(deleted)` once kubelet gzipped it)."""
    log = cri_file(tmp_path)
    append(log, *lines(0, 10), cri_line("torn last line")[:-1])
    sink = ListSink()
    a = agent(tmp_path, sink)
    drain(a)
    rotated = Path(f"{log}.20261127-022049")
    os.rename(log, rotated)
    append(log, *lines(10, 12))
    drain(a)
    # Not yet: the runtime may still write to the renamed file for a moment.
    assert numbers(sink) == list(range(12))
    before = METRICS.unfinished_lines_ended._value.get()
    hour_ago = time.time() - 3600
    os.utime(rotated, (hour_ago, hour_ago))
    drain(a)
    assert sink.messages()[12:] == ["torn last line"]
    assert METRICS.unfinished_lines_ended._value.get() == before + 1
    assert [f.path for f in a.open_files.files.values()] == [str(log)]
    again = ListSink()
    drain(agent(tmp_path, again))
    assert again.records == []


def test_a_gz_whose_last_line_never_got_its_newline_sends_it_once(tmp_path: Path) -> None:
    """Read behind where the stream stood, the line made the .gz inflate again from its
    start."""
    log = cri_file(tmp_path)
    append(log, *lines(0, 10))
    drain(agent(tmp_path, ListSink()))
    append(log, *lines(10, 2000), cri_line("line -1 torn")[:-1])
    rotated = Path(f"{log}.20261127-022049")
    os.rename(log, rotated)
    gz = gzip_like_kubelet(rotated)
    hour_ago = time.time() - 3600
    os.utime(gz, (hour_ago, hour_ago))
    append(log, *lines(2000, 2005))
    rewinds = []
    rewind = GzipTail.rewind

    def counted(tail: GzipTail) -> None:
        rewinds.append(tail)
        rewind(tail)

    sink = ListSink()
    a = agent(tmp_path, sink)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(GzipTail, "rewind", counted)
        drain(a)
    assert numbers(sink) == [*range(10, 2000), -1, *range(2000, 2005)]
    assert rewinds == []
    assert all(f.path != str(gz) for f in a.open_files.files.values())


def test_the_rest_of_a_docker_file_compressed_while_stopped_comes_from_its_gz(
    tmp_path: Path,
) -> None:
    """Docker's json-file with `compress`: the rotated `-json.log.1` becomes `.1.gz`. Not
    looked for, what the collector had not read of it when it stopped was lost."""
    log = docker_container(tmp_path / "docker", "c" * 64)
    append(log, *[docker_line(f"line {n}") for n in range(10)])
    drain(agent(tmp_path, ListSink()))
    append(log, *[docker_line(f"line {n}") for n in range(10, 30)])
    first = Path(f"{log}.1")
    os.rename(log, first)
    with open(first, "rb") as src, gzip.open(f"{first}.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.unlink(first)
    append(log, *[docker_line(f"line {n}") for n in range(30, 40)])
    sink = ListSink()
    drain(agent(tmp_path, sink))
    assert numbers(sink) == list(range(10, 40))
    again = ListSink()
    drain(agent(tmp_path, again))
    assert again.records == []
