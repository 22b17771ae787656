"""Which index names retention reads a period from, and which it never touches."""

from __future__ import annotations

from datetime import date

import pytest

from pipeline.retention import Periods

DAILY = "logferry-{kubernetes.namespace}-{@timestamp:%Y.%m.%d}"


@pytest.mark.parametrize(
    ("pattern", "index", "ended"),
    [
        (DAILY, "logferry-shop-2026.11.02", date(2026, 11, 2)),
        (DAILY, "logferry-kube-system-2026.11.02", date(2026, 11, 2)),
        (DAILY, "logferry-unknown-2024.02.29", date(2024, 2, 29)),
        (DAILY, "logferry-shop-2026.13.02", None),
        (DAILY, "logferry-shop-2026.11.02-restored", None),
        (DAILY, "logferry-2026.11.02", None),
        (DAILY, "other-shop-2026.11.02", None),
        (DAILY, "logferry-ds-shop", None),
        ("logs-{@timestamp:%Y.%m}", "logs-2026.02", date(2026, 2, 28)),
        ("logs-{@timestamp:%Y.%m}", "logs-2024.02", date(2024, 2, 29)),
        ("logs-{@timestamp:%Y}", "logs-2025", date(2025, 12, 31)),
        ("logs-{@timestamp:%Y%m%d}-{kubernetes.namespace}", "logs-20261102-web", date(2026, 11, 2)),
    ],
)
def test_period_of_an_index_name(pattern: str, index: str, ended: date | None) -> None:
    assert Periods(pattern).ended(index) == ended


def test_wildcard_lists_only_the_patterns_indices() -> None:
    assert Periods(DAILY).wildcard == "logferry-*-*"


def test_a_pattern_without_a_day_has_no_periods() -> None:
    periods = Periods("logferry-{kubernetes.namespace}")
    assert periods.form is None
    assert periods.ended("logferry-shop") is None
