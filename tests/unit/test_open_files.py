"""The file lifecycle on its own (collector.files): no reader, the tests read and acknowledge."""

from __future__ import annotations

import os
from pathlib import Path

from collector.annotate import Annotator
from collector.budget import Budget, FileReads
from collector.files import File, OpenFiles
from collector.metrics import METRICS
from tests.unit.logfiles import append, cri_line, settings

POD = "shop_cart-7d9f_0f1e2d3c"
CID = "c" * 64


def open_files(tmp: Path, *flags: str) -> OpenFiles:
    config = settings(tmp, *flags)
    return OpenFiles(config, FileReads(Budget(config.memory_limit)), Annotator(config, None))


def cri_file(tmp: Path, container: str = "app", pod: str = POD) -> Path:
    folder = tmp / "log" / "pods" / pod / container
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "0.log"


def by_path(files: OpenFiles) -> dict[str, File]:
    return {f.path: f for f in files.files.values()}


def delivered(file: File) -> None:
    """What the reader does once the sink acknowledged everything read."""
    while file.tail.read(1 << 20) is not None:
        pass
    file.acked = file.tail.offset


def test_a_file_reached_by_two_paths_is_opened_once_under_its_real_name(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    append(log, cri_line("one"))
    links = tmp_path / "log" / "containers"
    links.mkdir(parents=True)
    os.symlink(log, links / f"cart-7d9f_shop_app-{CID}.log")
    files = open_files(tmp_path)
    files.scan()
    (file,) = files.files.values()
    assert file.path == str(log)
    assert file.group.meta["container.id"] == CID, "what the link's name says is kept"
    assert file.group.meta["kubernetes.pod.uid"] == "0f1e2d3c", "and what the folder says"


def test_files_past_max_open_files_wait_until_one_is_read_to_its_end(tmp_path: Path) -> None:
    first, second = cri_file(tmp_path, "a"), cri_file(tmp_path, "b")
    append(first, cri_line("a"))
    append(second, cri_line("b"))
    files = open_files(tmp_path, "--max-open-files", "1")
    files.scan()
    (held,) = files.files.values()
    assert METRICS.files_waiting._value.get() == 1
    files.scan()
    assert list(files.files.values()) == [held]
    assert files.identify(held)
    delivered(held)
    files.scan()
    (now,) = files.files.values()
    assert now.path != held.path
    assert METRICS.files_waiting._value.get() == 0


def test_a_released_file_is_not_opened_again_until_it_changes(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    one = cri_line("one")
    append(log, one)
    rotated = log.with_name("0.log.20261127-020000")
    os.rename(log, rotated)
    files = open_files(tmp_path)
    files.scan()
    (file,) = files.files.values()
    assert file.rotated
    assert files.identify(file)
    delivered(file)
    assert files.releasable(file)
    files.release(file)
    files.scan()
    assert files.files == {}
    assert len(files.opened) == 1
    append(rotated, cri_line("two"))
    files.scan()
    (again,) = files.files.values()
    assert files.identify(again)
    assert again.tail.offset == len(one), "read on from where it was let go"


def test_identifying_waits_for_the_first_line_then_resumes_at_the_checkpoint(
    tmp_path: Path,
) -> None:
    log = cri_file(tmp_path)
    first = cri_line("first")
    append(log, first[:-1])
    files = open_files(tmp_path)
    files.scan()
    (file,) = files.files.values()
    assert not files.identify(file)
    assert file.encoder is None
    append(log, b"\n", cri_line("second"))
    assert files.identify(file)
    assert file.encoder is not None
    assert file.encoder.meta["container.runtime"] == "cri"
    file.tail.read(len(first))
    file.acked = len(first)
    files.save()

    later = open_files(tmp_path)
    later.scan()
    (again,) = later.files.values()
    assert later.identify(again)
    assert again.tail.offset == again.acked == len(first)


def test_a_truncated_file_starts_over_with_a_new_identity(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    append(log, cri_line("old content"), cri_line("more"))
    files = open_files(tmp_path)
    files.scan()
    (file,) = files.files.values()
    assert files.identify(file)
    delivered(file)
    before = file.tail.fingerprint
    with open(log, "wb") as f:
        f.write(cri_line("new"))
    assert file.tail.truncated()
    assert files.restart(file)
    assert (file.tail.offset, file.acked) == (0, 0)
    assert file.tail.fingerprint != before


def test_rotated_files_are_read_before_the_current_one_whatever_their_mtime(
    tmp_path: Path,
) -> None:
    log = cri_file(tmp_path)
    append(log, cri_line("current"))
    rotated = log.with_name("0.log.20261127-020000")
    append(rotated, cri_line("rotated"))
    os.utime(log, (1_000_000, 1_000_000))
    files = open_files(tmp_path)
    files.scan()
    (group,) = files.groups.values()
    assert [f.path for f in group.files] == [str(rotated), str(log)]


def test_deleted_files_past_the_bound_are_let_go_oldest_first(tmp_path: Path) -> None:
    logs = [cri_file(tmp_path, f"c{n}") for n in range(3)]
    for n, log in enumerate(logs):
        append(log, cri_line(f"line {n}"))
        os.utime(log, (1_000_000 + n, 1_000_000 + n))
    files = open_files(tmp_path, "--max-deleted-files", "1")
    files.scan()
    let_go = METRICS.files_let_go.labels("deleted_limit")._value.get()
    for log in logs:
        os.unlink(log)
    files.bound_deleted()
    assert [f.path for f in files.files.values()] == [str(logs[2])]
    assert METRICS.files_let_go.labels("deleted_limit")._value.get() == let_go + 2
    assert METRICS.deleted_open_files._value.get() == 1


def test_files_no_longer_selected_are_let_go_and_keep_their_checkpoint(tmp_path: Path) -> None:
    keep, drop = cri_file(tmp_path, "keep"), cri_file(tmp_path, "drop")
    read = cri_line("drop")
    append(keep, cri_line("keep"))
    append(drop, read, cri_line("unread"))
    files = open_files(tmp_path)
    files.scan()
    dropped = by_path(files)[str(drop)]
    assert files.identify(dropped)
    dropped.tail.read(len(read))
    dropped.acked = dropped.tail.offset
    let_go = METRICS.files_let_go.labels("excluded")._value.get()
    files.reconfigure(settings(tmp_path, "--exclude", "*/drop/*"))
    assert list(by_path(files)) == [str(keep)]
    assert METRICS.files_let_go.labels("excluded")._value.get() == let_go + 1
    assert dropped.tail.fingerprint is not None
    assert files.checkpoints.get(dropped.tail.fingerprint) == len(read)


def test_an_excluded_container_is_skipped_to_its_end_and_forgotten(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    append(log, cri_line("one"), cri_line("two"))
    files = open_files(tmp_path)
    files.scan()
    (file,) = files.files.values()
    assert files.identify(file)
    files.exclude(file.group)
    assert files.files == {}
    assert files.groups == {}
    assert file.tail.fingerprint is not None
    assert files.checkpoints.get(file.tail.fingerprint) == log.stat().st_size
