"""Waiting for work: inotify wakes on writes and folder changes; polling where it cannot."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from collector import wakeup
from collector.wakeup import Wakeup
from harness.wait import until
from tests.servers import unavailable


def fallbacks(reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "logferry_collector_inotify_fallbacks_total", {"reason": reason}
    )
    return value or 0.0


@pytest.fixture
def inotify() -> Wakeup:
    w = Wakeup(enabled=True)
    if w.polling:
        unavailable("no inotify on this machine")
    return w


def test_a_write_to_a_followed_file_wakes_with_its_key(tmp_path: Path, inotify: Wakeup) -> None:
    path = tmp_path / "0.log"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)
    assert inotify.follow("file-1", fd)
    assert inotify.wait(0).files == set()
    with open(path, "ab") as f:
        f.write(b"line\n")
    woken = inotify.wait(5)
    assert woken.files == {"file-1"}
    assert not woken.rescan
    os.close(fd)


def test_a_renamed_and_unlinked_file_still_wakes_while_it_is_open(
    tmp_path: Path, inotify: Wakeup
) -> None:
    path = tmp_path / "0.log"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)
    with open(path, "ab") as writer:
        inotify.follow("file-1", fd)
        os.rename(path, tmp_path / "0.log.1")
        os.unlink(tmp_path / "0.log.1")
        writer.write(b"last words\n")
        writer.flush()
        assert inotify.wait(5).files == {"file-1"}
        inotify.unfollow("file-1")
        writer.write(b"more\n")
        writer.flush()
        assert inotify.wait(0).files == set()
    os.close(fd)


def test_a_new_entry_in_a_watched_folder_asks_for_a_rescan(tmp_path: Path, inotify: Wakeup) -> None:
    inotify.watch_folders({str(tmp_path)})
    (tmp_path / "new.log").write_bytes(b"x\n")
    assert inotify.wait(5).rescan
    inotify.watch_folders(set())
    (tmp_path / "other.log").write_bytes(b"x\n")
    assert not inotify.wait(0).rescan


def test_without_inotify_everything_is_polled_and_said(tmp_path: Path) -> None:
    w = Wakeup(enabled=False)
    assert w.polling
    fd = os.open(tmp_path, os.O_RDONLY)
    assert not w.follow("file-1", fd)
    os.close(fd)


def test_past_the_watch_limit_a_file_is_polled_and_counted(
    tmp_path: Path, inotify: Wakeup, monkeypatch: pytest.MonkeyPatch
) -> None:
    # max_user_watches is one number for the whole machine, shared with everything else
    # running here: the kernel's refusal is played instead of lowering it.
    def refuse(_path: object, _mask: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    assert inotify.inotify is not None
    monkeypatch.setattr(inotify.inotify, "add_watch", refuse)
    before = fallbacks("watch_limit")
    path = tmp_path / "0.log"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)
    assert not inotify.follow("file-1", fd)
    assert fallbacks("watch_limit") == before + 1
    assert REGISTRY.get_sample_value("logferry_collector_files_polled") == 1
    inotify.unfollow("file-1")
    assert REGISTRY.get_sample_value("logferry_collector_files_polled") == 0
    inotify.watch_folders({str(tmp_path)})
    assert inotify.folders_polled
    # Asked once: the next scans do not count the same refusal again.
    inotify.watch_folders({str(tmp_path)})
    assert fallbacks("watch_limit") == before + 2
    assert inotify.folders_polled
    inotify.watch_folders(set())
    assert not inotify.folders_polled
    os.close(fd)


def test_lost_events_ask_for_a_rescan_and_are_counted(tmp_path: Path, inotify: Wakeup) -> None:
    # The kernel's queue bound (max_queued_events) is machine-wide: its overflow event is
    # given to the handler as the kernel would send it.
    before = fallbacks("queue_overflow")
    woken = wakeup.Woken()
    inotify.take(-1, wakeup.OVERFLOW, woken)
    assert woken.rescan
    assert fallbacks("queue_overflow") == before + 1


def test_when_inotify_cannot_be_had_it_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    # max_user_instances too is machine-wide: the refusal is played, as above.
    def refuse() -> None:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(wakeup, "INotify", refuse)
    before = fallbacks("unavailable")
    assert Wakeup(enabled=True).polling
    assert fallbacks("unavailable") == before + 1


def test_writes_and_folder_entries_read_together_are_all_taken(
    tmp_path: Path, inotify: Wakeup
) -> None:
    # File events carry no name, folder events one: read in one go, each is taken in full.
    paths = [tmp_path / f"{n}.log" for n in range(3)]
    fds = []
    for n, path in enumerate(paths):
        path.write_bytes(b"")
        fds.append(os.open(path, os.O_RDONLY))
        assert inotify.follow(f"file-{n}", fds[-1])
    inotify.watch_folders({str(tmp_path)})
    inotify.wait(0)
    for _ in range(50):
        for path in paths[:2]:
            with open(path, "ab") as f:
                f.write(b"line\n")
    (tmp_path / "a-new-container-file-with-a-long-name.log").write_bytes(b"")
    with open(paths[2], "ab") as f:
        f.write(b"line\n")
    woken = wakeup.Woken()
    until(lambda: inotify.take_all(inotify.available(), woken) or len(woken.files) == 3)
    assert woken.files == {"file-0", "file-1", "file-2"}
    assert woken.rescan
    for fd in fds:
        os.close(fd)
