"""A released file's inode given to a new file of the same size: the new file is read.

The collector remembers files it read to their end and let go by (device, inode) and size,
so as not to open them again, and forgets them once they are gone from disk at a scan. ext4
hands a freed inode to the next file created, and kubelet unlinks a rotated file (after
gzipping it) and has the runtime create the new 0.log within milliseconds, between two scans.
A new file that is, when first seen, as long as the released one -- a job printing the same
one-line report each run -- looks finished and is never read.

The test runs on a filesystem that does reuse inodes (tmpfs and overlayfs do not): a small
ext4 image mounted through a loop device (as root), else the temporary folder when a probe
finds it reuses them. Without either it fails under CI=true and is skipped elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.logfiles import ListSink, agent, drain

pytestmark = pytest.mark.e2e

IMAGE_BYTES = 16 * 1024 * 1024
TRIES = 500
"""Files created, one after another, until the filesystem hands out a freed inode."""


def reuses_inodes(folder: Path) -> bool:
    """Whether a file created in `folder` soon after one was unlinked gets its inode."""
    probe = folder / "probe"
    probe.write_bytes(b"x")
    inode = probe.stat().st_ino
    probe.unlink()
    made: list[Path] = []
    try:
        for n in range(TRIES):
            made.append(folder / f"probe-{n}")
            made[-1].write_bytes(b"x")
            if made[-1].stat().st_ino == inode:
                return True
        return False
    finally:
        for path in made:
            path.unlink()


def mount_ext4(tmp: Path) -> Path | str:
    """A fresh ext4 filesystem on an image file, mounted under `tmp`; else why not."""
    if os.geteuid() != 0:
        return "mounting an image needs root"
    if shutil.which("mkfs.ext4") is None:
        return "mkfs.ext4 is not installed (e2fsprogs)"
    image, mountpoint = tmp / "ext4.img", tmp / "ext4"
    with open(image, "wb") as f:
        f.truncate(IMAGE_BYTES)
    mountpoint.mkdir()
    for command in (["mkfs.ext4", "-q", "-F", str(image)], ["mount", "-o", "loop", str(image),
                                                             str(mountpoint)]):  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return f"{' '.join(command[:2])} failed: {done.stderr.strip()}"
    return mountpoint


def unmount(mountpoint: Path) -> None:
    # Lazily when a file is still held open (a failed test's agent): gone once it closes.
    if subprocess.run(["umount", str(mountpoint)], capture_output=True, check=False).returncode:
        subprocess.run(["umount", "-l", str(mountpoint)], check=True)


@pytest.fixture
def node_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on a filesystem that gives a freed inode to the next file, as ext4 does."""
    mounted = mount_ext4(tmp_path)
    if isinstance(mounted, Path):
        try:
            assert reuses_inodes(mounted), "a fresh ext4 filesystem reuses a freed inode"
            yield mounted
        finally:
            unmount(mounted)
        return
    if reuses_inodes(tmp_path):
        yield tmp_path
        return
    reason = f"no filesystem that reuses inodes: {mounted}, and {tmp_path} does not"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def job_pod(tmp: Path, run: int) -> Path:
    """The folder of one run's pod; its container's log file once `report()` wrote it."""
    folder = tmp / "log" / "pods" / f"batch_report-2921{run:04d}-x{run}_uid-{run:04d}" / "job"
    folder.mkdir(parents=True)
    return folder / "0.log"


def report(log: Path, run: int) -> None:
    stamp = f"2026-11-27T03:{run:02d}:00.000000001Z"
    log.write_bytes(f"{stamp} stdout F report {run:04d} done\n".encode())


def test_a_new_file_on_a_reused_inode_with_the_same_size_is_read(node_disk: Path) -> None:
    sink = ListSink()
    collector = agent(node_disk, sink)
    log = job_pod(node_disk, 1)
    report(log, 1)
    drain(collector)
    rotated = log.with_name("0.log.20261127-030100")
    log.rename(rotated)
    drain(collector)
    assert not collector.files, "the rotated file, read to its end, is let go"
    inode, size = rotated.stat().st_ino, rotated.stat().st_size
    # kubelet's next rotation: gzip the rotated file, unlink it; the runtime opens 0.log.
    rotated.unlink()
    for n in range(TRIES):
        # Until the filesystem hands out the freed inode (ext4 soon does); the others stay,
        # under names the collector does not read.
        candidate = log.with_name(f"new-{n}")
        report(candidate, 2)
        if candidate.stat().st_ino == inode:
            candidate.rename(log)
            break
    else:
        pytest.fail("the filesystem did not give the freed inode to a new file")
    assert log.stat().st_size == size
    drain(collector)
    assert sink.messages() == ["report 0001 done", "report 0002 done"]
    collector.shutdown()
