"""The memory budget's limit: from --memory-limit, else the cgroup's limit, else 256 MiB."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.budget import DEFAULT_LIMIT, byte_size, cgroup_limit, default_limit
from collector.config import parse
from collector.settings import SettingError


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


def test_byte_size_auto_means_the_default():
    assert byte_size("auto") == 0
