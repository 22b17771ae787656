"""Per-pod rate limits: the annotation's words, and a bucket that slows without dropping."""

from __future__ import annotations

import pytest

from collector.ratelimit import MIN_READ, Bucket, Rate, rate


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500/s", Rate(500, lines=True)),
        (" 500 / s ", Rate(500, lines=True)),
        ("2.5/sec", Rate(2.5, lines=True)),
        ("1MiB/s", Rate(1024 * 1024, lines=False)),
        ("200KB/s", Rate(200_000, lines=False)),
        ("64 KiB/second", Rate(64 * 1024, lines=False)),
        ("none", None),
        ("off", None),
        ("0", None),
        ("", None),
    ],
)
def test_rates_are_read_in_lines_or_bytes(text: str, expected: Rate | None) -> None:
    assert rate(text) == expected


@pytest.mark.parametrize(
    "text", ["fast", "500", "500/m", "-5/s", "0/s", "1ZiB/s", "/s", "5 lines/s"]
)
def test_a_rate_that_cannot_be_read_is_refused_with_the_form_it_needs(text: str) -> None:
    with pytest.raises(ValueError, match="500/s"):
        rate(text)


def test_a_bucket_in_lines_allows_one_second_then_waits_its_debt_out() -> None:
    bucket = Bucket(Rate(100, lines=True), now=0.0)
    # The lines' length is not known yet: a small first read learns it.
    assert bucket.allowance(0.0, 1 << 20) == MIN_READ
    bucket.spend(0.0, MIN_READ, 10)
    size = bucket.allowance(0.0, 1 << 20)
    assert size == int(90 * MIN_READ / 10)
    # Shorter lines than before: the read holds more lines than the bucket had.
    bucket.spend(0.0, size, 390)
    assert bucket.allowance(0.0, 1 << 20) == 0
    assert bucket.ready_in(0.0) == pytest.approx(3.01)
    assert bucket.allowance(2.0, 1 << 20) == 0
    assert bucket.allowance(3.1, 1 << 20) > 0
    assert bucket.line_bytes < MIN_READ / 10


def test_a_bucket_in_bytes_never_allows_more_than_its_burst_or_the_most_asked() -> None:
    bucket = Bucket(Rate(10_000, lines=False), now=0.0)
    assert bucket.allowance(100.0, 1 << 20) == 10_000
    assert bucket.allowance(100.0, 6_000) == 6_000
    bucket.spend(100.0, 10_000, 50)
    assert bucket.allowance(100.0, 1 << 20) == 0
    assert bucket.allowance(100.5, 1 << 20) == 5_000
    bucket.spend(100.5, 5_000, 20)
    assert bucket.allowance(100.5001, 1 << 20) == MIN_READ
    assert bucket.allowance(102.0, 1 << 20) == 10_000


def test_over_a_long_run_the_rate_is_kept() -> None:
    bucket = Bucket(Rate(1000, lines=True), now=0.0)
    now, lines = 0.0, 0
    while now < 60:
        size = bucket.allowance(now, 1 << 20)
        if size:
            got = size // 100
            bucket.spend(now, got * 100, got)
            lines += got
        now += 0.01
    # 60 s at the rate, plus the one second of burst and at most one read over.
    assert 59_000 <= lines <= 62_000
