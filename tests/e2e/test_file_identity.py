"""A released file's inode given to a new file of the same size: the new file is read.

The collector remembers files it read to their end and let go by (device, inode) and size,
so as not to open them again, and forgets them once they are gone from disk at a scan. ext4
hands a freed inode to the next file created, and kubelet unlinks a rotated file (after
gzipping it) and has the runtime create the new 0.log within milliseconds, between two scans.
A new file that is, when first seen, as long as the released one -- a job printing the same
one-line report each run -- looks finished and is never read.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.logfiles import ListSink, agent, drain

pytestmark = pytest.mark.e2e


def job_pod(tmp: Path, run: int) -> Path:
    """The folder of one run's pod; its container's log file once `report()` wrote it."""
    folder = tmp / "log" / "pods" / f"batch_report-2921{run:04d}-x{run}_uid-{run:04d}" / "job"
    folder.mkdir(parents=True)
    return folder / "0.log"


def report(log: Path, run: int) -> None:
    stamp = f"2026-11-27T03:{run:02d}:00.000000001Z"
    log.write_bytes(f"{stamp} stdout F report {run:04d} done\n".encode())


def test_a_new_file_on_a_reused_inode_with_the_same_size_is_read(tmp_path: Path) -> None:
    sink = ListSink()
    collector = agent(tmp_path, sink)
    log = job_pod(tmp_path, 1)
    report(log, 1)
    drain(collector)
    rotated = log.with_name("0.log.20261127-030100")
    log.rename(rotated)
    drain(collector)
    assert not collector.files, "the rotated file, read to its end, is let go"
    inode, size = rotated.stat().st_ino, rotated.stat().st_size
    # kubelet's next rotation: gzip the rotated file, unlink it; the runtime opens 0.log.
    rotated.unlink()
    for n in range(500):
        # Until the filesystem hands out the freed inode (ext4 soon does); the others stay,
        # under names the collector does not read.
        candidate = log.with_name(f"new-{n}")
        report(candidate, 2)
        if candidate.stat().st_ino == inode:
            candidate.rename(log)
            break
    else:
        pytest.skip("this filesystem did not give the freed inode to a new file")
    assert log.stat().st_size == size
    drain(collector)
    assert sink.messages() == ["report 0001 done", "report 0002 done"]
