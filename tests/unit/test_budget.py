"""The memory budget: its limit (--memory-limit, else from the cgroup, else 256 MiB), and
the file side's reads against it."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.budget import DEFAULT_LIMIT, PAUSES, cgroup_limit, default_limit
from collector.config import parse
from logferry.settings import SettingError
from tests.unit.logfiles import ListSink, agent, append, cri_line, drain


def files(tmp_path: Path, v2: str | None, v1: str | None) -> tuple[str, str]:
    paths = (tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes")
    for path, text in zip(paths, (v2, v1), strict=True):
        if text is not None:
            path.write_text(text + "\n")
    return str(paths[0]), str(paths[1])


@pytest.mark.parametrize(
    ("v2", "v1", "limit"),
    [
        ("536870912", None, 256 * 1024 * 1024),
        ("max", "536870912", DEFAULT_LIMIT),
        (None, "1073741824", 512 * 1024 * 1024),
        (None, "9223372036854771712", DEFAULT_LIMIT),
        (None, None, DEFAULT_LIMIT),
    ],
)
def test_the_default_is_half_the_cgroup_limit_else_256_mib(tmp_path, v2, v1, limit):
    assert default_limit(files(tmp_path, v2, v1)) == limit


def test_an_unreadable_cgroup_file_is_no_limit(tmp_path):
    assert cgroup_limit(files(tmp_path, "garbage", None)) is None


def test_the_setting_takes_sizes_and_names_itself_when_wrong():
    base = ["--sink", "stdout"]
    assert parse([*base, "--memory-limit", "64Mi"]).memory_limit == 64 * 1024 * 1024
    assert parse([*base, "--memory-limit", "1GiB"]).memory_limit == 1024**3
    assert parse([*base, "--memory-limit", "5000000"]).memory_limit == 5_000_000
    assert parse(base).memory_limit == default_limit()
    with pytest.raises(SettingError, match="memory_limit"):
        parse([*base, "--memory-limit", "lots"])
    with pytest.raises(SettingError, match="memory_limit"):
        parse([*base, "--memory-limit=-1Mi"])


def test_memory_limit_auto_means_the_default(tmp_path):
    base = ["--sink", "stdout", "--state-dir", str(tmp_path)]
    assert parse([*base, "--memory-limit", "auto"]).memory_limit == default_limit()


# --- the file side -----------------------------------------------------------------------------


def pod_log(tmp: Path, n: int) -> Path:
    folder = tmp / "log" / "pods" / f"shop_cart-{n}_uid{n}" / "app"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "0.log"


def test_started_lines_at_the_end_of_files_are_not_held_in_memory(tmp_path):
    """200 files end in a 512 KiB line still being written: 100 MiB held before, each file
    its own; now they are read again from the file when their end comes."""
    limit = 8 * 1024 * 1024
    sink = ListSink()
    a = agent(tmp_path, sink, "--memory-limit", str(limit))
    logs = [pod_log(tmp_path, n) for n in range(200)]
    for n, log in enumerate(logs):
        append(log, cri_line(f"{n} whole"), cri_line(f"{n} ")[:-1] + b"z" * 512 * 1024)
    drain(a, turns=3)
    assert sorted(sink.messages()) == sorted(f"{n} whole" for n in range(200))
    held = sum(len(f.tail.pending) for f in a.files.values())
    assert held <= limit, f"{held / 2**20:.0f} MiB held"
    assert a.budget.used <= limit
    for log in logs:
        append(log, b"\n")
    drain(a, turns=3)
    ends = [m for m in sink.messages() if not m.endswith("whole")]
    assert sorted(ends) == sorted(f"{n} " + "z" * 512 * 1024 for n in range(200))
    assert a.budget.used == 0
    assert a.idle()


def test_reading_files_pauses_while_the_budget_is_exhausted(tmp_path):
    """The budget is shared with the forward listener: while it is used up, no file is read;
    once it has room again, every line is."""
    limit = 1024 * 1024
    sink = ListSink()
    a = agent(tmp_path, sink, "--memory-limit", str(limit))
    log = pod_log(tmp_path, 0)
    append(log, *(cri_line(f"line {n}") for n in range(100)))
    a.budget.take(limit)
    pauses = PAUSES.labels("files")._value.get()
    drain(a, turns=3)
    assert sink.messages() == []
    assert PAUSES.labels("files")._value.get() == pauses + 1
    a.budget.give(limit)
    drain(a, turns=3)
    assert sink.messages() == [f"line {n}" for n in range(100)]
    assert a.budget.used == 0


def test_records_in_flight_count_against_the_budget(tmp_path):
    sink = ListSink()
    sink.hold = True
    a = agent(tmp_path, sink, "--memory-limit", "1000000")
    log = pod_log(tmp_path, 0)
    append(log, *(cri_line(f"line {n} " + "q" * 1000) for n in range(2000)))
    drain(a, turns=3)
    read = len(sink.records)
    assert 0 < read < 2000
    assert a.budget.exhausted()
    sink.release()
    assert a.budget.used == 0
    # Each release lets about a budget's worth more in, a read (read_quantum) at a time.
    for _ in range(10):
        drain(a, turns=20)
        sink.release()
    assert len(sink.records) == 2000


def test_a_file_closed_without_forget_gives_its_bytes_back_once_the_budget_runs_out(tmp_path):
    """Whatever path closes a file, the budget does not keep its started line for ever."""
    limit = 1024 * 1024
    sink = ListSink()
    a = agent(tmp_path, sink, "--memory-limit", str(limit))
    log = pod_log(tmp_path, 0)
    append(log, cri_line("whole"), b"2026-11-27T02:00:00.000000001Z stdout F " + b"s" * 30_000)
    drain(a, turns=1)
    held = a.budget.used
    assert held > 0
    (file,) = a.files.values()
    file.tail.close()
    del a.files[(file.tail.dev, file.tail.ino)]
    file.group.files.remove(file)
    a.budget.take(limit)
    other = pod_log(tmp_path, 1)
    append(other, cri_line("other"))
    drain(a, turns=1)
    assert a.budget.used == limit
