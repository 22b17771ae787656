"""Reading container logs from real files: rotation, truncation, restarts, symlinks."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pytest

from collector.tail import END_BYTES, Chunk, Tail
from tests.unit.logfiles import (
    ListSink,
    agent,
    append,
    cri_line,
    docker_container,
    docker_line,
    drain,
)

CID = "a" * 64


def cri_file(tmp: Path, container: str = "app") -> Path:
    folder = tmp / "log" / "pods" / "shop_cart-7d9f_0f1e2d3c" / container
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "0.log"


def test_docker_records_carry_the_contract_fields(tmp_path: Path) -> None:
    log = docker_container(tmp_path / "docker", CID, pod="cart-1", ns="shop")
    append(log, docker_line("first"), docker_line("oops", "stderr"))
    sink = ListSink()
    drain(agent(tmp_path, sink))
    first, second = sink.records
    assert first["message"] == "first"
    assert second["stream"] == "stderr"
    assert first["container"] == {
        "id": CID,
        "name": "k8s_app_cart-1_shop_uid-1_0",
        "image": {"name": "registry.example/app:1.2"},
        "runtime": "docker",
    }
    assert first["kubernetes"] == {
        "namespace": "shop",
        "pod": {"name": "cart-1", "uid": "uid-1"},
        "container": {"name": "app"},
    }
    assert first["host"] == {"name": "node-a"}
    assert first["log"] == {"file": {"path": str(log)}, "offset": 0}
    assert second["log"]["offset"] == len(docker_line("first"))
    assert first["event"]["id"] != second["event"]["id"]
    assert sink.keys == [CID, CID]


def test_rename_rotation_reads_the_old_file_to_its_end_first(tmp_path: Path) -> None:
    log = docker_container(tmp_path / "docker", CID)
    append(log, *(docker_line(f"line {n}") for n in range(3)))
    sink = ListSink()
    a = agent(tmp_path, sink)
    drain(a)
    append(log, *(docker_line(f"line {n}") for n in range(3, 6)))
    os.rename(log, f"{log}.1")
    append(log, *(docker_line(f"line {n}") for n in range(6, 9)))
    drain(a)
    assert sink.messages() == [f"line {n}" for n in range(9)]


def test_kubelet_rotation_with_gzip_and_unlink_while_behind(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    append(log, *(cri_line(f"line {n}") for n in range(2)))
    sink = ListSink()
    a = agent(tmp_path, sink)
    drain(a)
    # Written, rotated, gzipped and unlinked before the agent looked again.
    append(log, *(cri_line(f"line {n}") for n in range(2, 5)))
    rotated = Path(f"{log}.20261127-022049")
    os.rename(log, rotated)
    append(log, cri_line("line 5"))
    with open(rotated, "rb") as src, gzip.open(f"{rotated}.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.unlink(rotated)
    drain(a)
    assert sink.messages() == [f"line {n}" for n in range(6)]
    assert len(a.files) == 1


def test_copytruncate_starts_again_at_zero(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    append(log, *(cri_line(f"old {n}") for n in range(5)))
    sink = ListSink()
    a = agent(tmp_path, sink)
    drain(a)
    with open(log, "r+b") as f:
        f.truncate(0)
    append(log, cri_line("new 0"))
    drain(a)
    assert sink.messages() == [*(f"old {n}" for n in range(5)), "new 0"]
    assert sink.records[-1]["log"]["offset"] == 0


def test_restart_resumes_at_the_checkpoint_without_duplicates(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    append(log, *(cri_line(f"line {n}") for n in range(3)))
    first = ListSink()
    drain(agent(tmp_path, first))
    append(log, *(cri_line(f"line {n}") for n in range(3, 5)))
    second = ListSink()
    drain(agent(tmp_path, second))
    assert first.messages() == ["line 0", "line 1", "line 2"]
    assert second.messages() == ["line 3", "line 4"]


def test_unacknowledged_records_are_read_again_with_the_same_ids(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    append(log, *(cri_line(f"line {n}") for n in range(3)))
    lost = ListSink()
    lost.hold = True
    drain(agent(tmp_path, lost))
    again = ListSink()
    drain(agent(tmp_path, again))
    assert again.messages() == lost.messages() == ["line 0", "line 1", "line 2"]
    assert [r["event"]["id"] for r in again.records] == [r["event"]["id"] for r in lost.records]


def test_checkpoint_follows_acknowledgements_only(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    append(log, cri_line("one"))
    sink = ListSink()
    sink.hold = True
    a = agent(tmp_path, sink)
    drain(a)
    (file,) = a.files.values()
    assert file.acked == 0
    sink.release()
    assert file.acked == log.stat().st_size


def test_inode_reuse_is_read_as_a_new_file(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    append(log, *(cri_line(f"first file {n}") for n in range(4)))
    drain(agent(tmp_path, ListSink()))
    ino = log.stat().st_ino
    log.unlink()
    append(log, cri_line("second"))
    sink = ListSink()
    drain(agent(tmp_path, sink))
    # Whether or not the filesystem gave the same inode back, the new content is read whole.
    assert sink.messages() == ["second"], f"inode reused: {log.stat().st_ino == ino}"


def test_inode_reuse_with_a_forged_checkpoint_is_not_trusted(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    append(log, *(cri_line(f"a {n}") for n in range(4)))
    drain(agent(tmp_path, ListSink()))
    # Same inode, new content (what a reuse looks like): the fingerprint differs.
    with open(log, "r+b") as f:
        f.seek(0)
        f.write(b"".join(cri_line(f"b {n}") for n in range(5)))
    sink = ListSink()
    drain(agent(tmp_path, sink))
    assert sink.messages() == [f"b {n}" for n in range(5)]


def test_a_file_reached_by_symlink_and_directly_is_read_once(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    append(log, cri_line("only once"))
    links = tmp_path / "log" / "containers"
    links.mkdir(parents=True)
    (links / f"cart-7d9f_shop_app-{'b' * 64}.log").symlink_to(log)
    sink = ListSink()
    drain(agent(tmp_path, sink))
    (record,) = sink.records
    assert record["message"] == "only once"
    assert record["log"]["file"]["path"] == str(log)
    assert record["container"]["id"] == "b" * 64
    assert record["kubernetes"]["pod"] == {"name": "cart-7d9f", "uid": "0f1e2d3c"}


def test_partial_last_line_waits_for_its_newline(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    line = cri_line("complete")
    append(log, line, cri_line("half")[:-3])
    sink = ListSink()
    a = agent(tmp_path, sink)
    drain(a)
    assert sink.messages() == ["complete"]
    append(log, b"lf\n")
    drain(a)
    assert sink.messages() == ["complete", "half"]


def test_docker_16k_pieces_are_joined(tmp_path: Path) -> None:
    log = docker_container(tmp_path / "docker", CID)
    big = "x" * 16384 + "y" * 16384 + "z" * 10
    append(
        log,
        docker_line(big[:16384], newline=False),
        docker_line("small", "stderr"),
        docker_line(big[16384:32768], newline=False),
        docker_line(big[32768:]),
    )
    sink = ListSink()
    drain(agent(tmp_path, sink))
    assert [(r["stream"], r["message"]) for r in sink.records] == [
        ("stderr", "small"),
        ("stdout", big),
    ]
    assert sink.records[1]["log"]["offset"] == 0


def test_cri_partial_lines_are_joined_and_capped(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    append(log, cri_line("a" * 600, tag="P"), cri_line("b" * 600, tag="P"), cri_line("c"))
    sink = ListSink()
    drain(agent(tmp_path, sink, "--max-record-bytes", "1000"))
    (record,) = sink.records
    assert record["message"] == "a" * 600 + "b" * 400
    assert record["tags"] == ["truncated"]


@pytest.mark.parametrize("kind", ["docker", "cri"])
def test_a_whole_line_longer_than_max_record_is_cut(tmp_path: Path, kind: str) -> None:
    if kind == "docker":
        log, line = docker_container(tmp_path / "docker", CID), docker_line
    else:
        log, line = cri_file(tmp_path), cri_line
    append(log, line("short"), line("x" * 3000), line("after"))
    sink = ListSink()
    drain(agent(tmp_path, sink, "--max-record-bytes", "1000"))
    assert [(r["message"], r.get("tags")) for r in sink.records] == [
        ("short", None),
        ("x" * 1000, ["truncated"]),
        ("after", None),
    ]


@pytest.mark.parametrize("kind", ["docker", "cri"])
def test_a_line_cut_inside_a_secret_keeps_none_of_it(tmp_path: Path, kind: str) -> None:
    """Cut at --max-record-bytes before redaction saw it, `Bearer eyJhbGciOiJI` was too
    short for the bearer rule and shipped as it was."""
    if kind == "docker":
        log, line = docker_container(tmp_path / "docker", CID), docker_line
    else:
        log, line = cri_file(tmp_path), cri_line
    head = "x" * 965 + " Authorization: Bearer "
    append(log, line(head + "eyJhbGciOiJIUzI1NiJ9.abcdefghijklmnop end"), line("after"))
    sink = ListSink()
    drain(agent(tmp_path, sink, "--max-record-bytes", "1000"))
    assert [(r["message"], r.get("tags")) for r in sink.records] == [
        (head + "[REDACTED:bearer]", ["truncated", "redacted"]),
        ("after", None),
    ]


def test_malformed_lines_are_shipped_tagged_and_counted(tmp_path: Path) -> None:
    log = docker_container(tmp_path / "docker", CID)
    append(log, docker_line("good"), b'{"log": "cut\n', b"\xff\x00\n", docker_line("good again"))
    sink = ListSink()
    drain(agent(tmp_path, sink))
    assert [(r["message"], r.get("tags")) for r in sink.records] == [
        ("good", None),
        ('{"log": "cut', ["parse_error"]),
        ("\ufffd\ufffd", ["parse_error"]),
        ("good again", None),
    ]


def test_a_malformed_docker_line_keeps_the_stream_it_told(tmp_path: Path) -> None:
    """Without its time the line is a parse error, kept whole: it said stdout all the same."""
    log = docker_container(tmp_path / "docker", CID)
    append(log, b'{"log":"payment failed\\n","stream":"stderr"}\n')
    sink = ListSink()
    drain(agent(tmp_path, sink))
    (record,) = sink.records
    assert record["tags"] == ["parse_error"]
    assert record["message"] == '{"log":"payment failed\\n","stream":"stderr"}'
    assert record["stream"] == "stderr"


def test_multiline_groups_java_traces_per_configured_container(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    append(
        log,
        cri_line('Exception in thread "main" java.lang.IllegalStateException: boom'),
        cri_line("\tat com.shop.Cart.add(Cart.java:12)"),
        cri_line("\tat com.shop.Main.main(Main.java:5)"),
        cri_line("next record"),
    )
    sink = ListSink()
    drain(agent(tmp_path, sink, "--multiline", "shop/*/app=java", "--multiline-timeout", "0"))
    assert [r["message"] for r in sink.records] == [
        'Exception in thread "main" java.lang.IllegalStateException: boom\n'
        "\tat com.shop.Cart.add(Cart.java:12)\n"
        "\tat com.shop.Main.main(Main.java:5)",
        "next record",
    ]
    assert sink.records[0]["tags"] == ["multiline"]


def test_include_and_exclude_globs(tmp_path: Path) -> None:
    keep = cri_file(tmp_path, "app")
    skip = cri_file(tmp_path, "sidecar")
    append(keep, cri_line("kept"))
    append(skip, cri_line("skipped"))
    sink = ListSink()
    drain(agent(tmp_path, sink, "--exclude", "*/sidecar/*"))
    assert sink.messages() == ["kept"]


def test_unreadable_checkpoints_are_set_aside_and_files_read_again(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    append(log, cri_line("kept"))
    drain(agent(tmp_path, ListSink()))
    state = tmp_path / "state" / "checkpoints.json"
    state.write_bytes(b'{"files": {"x": {"offset": ')
    sink = ListSink()
    drain(agent(tmp_path, sink))
    assert sink.messages() == ["kept"]
    assert (tmp_path / "state" / "checkpoints.json.unreadable").exists()
    assert b'"offset"' in state.read_bytes()


def test_a_character_cut_by_the_cri_16k_split_is_whole_again(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    text = "é" * 10
    data = text.encode()
    append(
        log,
        b"2026-11-27T02:20:49Z stdout P " + data[:5] + b"\n",
        b"2026-11-27T02:20:49Z stdout F " + data[5:] + b"\n",
        b"2026-11-27T02:20:49Z stdout F caf\xe9\n",
    )
    sink = ListSink()
    drain(agent(tmp_path, sink))
    assert [(r["message"], r.get("tags")) for r in sink.records] == [
        (text, None),
        ("caf\ufffd", ["invalid_utf8"]),
    ]
    assert sink.records[1]["@timestamp"] == "2026-11-27T02:20:49Z"


def test_a_read_says_whether_it_stopped_short_of_the_files_end(tmp_path: Path) -> None:
    # The agent visits a container again at once only when its last read may have left
    # lines behind; else it waits for the file's next write event.

    path = tmp_path / "0.log"
    path.write_bytes(b"".join(b"line %d\n" % n for n in range(100)))
    tail = Tail.open(str(path), str(tmp_path), 1 << 20)
    first = tail.read(64)
    assert first is not None
    assert tail.more
    rest = tail.read(1 << 20)
    assert rest is not None
    assert not tail.more
    assert (first.data + b"\n" + rest.data).split(b"\n") == [b"line %d" % n for n in range(100)]
    tail.close()


@pytest.mark.parametrize("last", [300, 5000, 200_000])
@pytest.mark.parametrize("reads", ["whole", "small", "dropped"])
def test_a_last_line_without_newline_is_handed_out_cut_as_any_line(
    tmp_path: Path, last: int, reads: str
) -> None:
    """Whether the reads kept it whole, kept its head and end, or kept nothing (parked),
    the line is the same: its head up to `max_line` and, when longer, its last bytes."""
    path = tmp_path / "0.log"
    line = bytes(ord("a") + n % 26 for n in range(last))
    path.write_bytes(b"x" * 10 + b"\n" + line)
    tail = Tail.open(str(path), str(tmp_path), 4096)
    size = 16 if reads == "small" else 1 << 20
    assert tail.read(size) == Chunk(0, b"x" * 10, 11)
    assert tail.read(size) is None
    if reads == "dropped":
        tail.seek(tail.offset)
    chunk = tail.finish()
    assert chunk is not None
    assert (chunk.offset, chunk.data, chunk.end) == (11, line[:4096], 11 + last)
    if last <= 4096:
        assert chunk.rest is None
    else:
        assert chunk.rest == line[max(4096, last - END_BYTES) :]
    assert tail.finish() is None
    tail.close()
