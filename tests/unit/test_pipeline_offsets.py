"""The commit bookkeeping: only the finished prefix of each partition is ever committed."""

from __future__ import annotations

from pipeline.offsets import Ledger

A = ("logs", 0)
B = ("logs", 1)


def test_bulks_finished_in_order_commit_each_end() -> None:
    ledger = Ledger()
    first = ledger.open({A: 10, B: 5})
    second = ledger.open({A: 20})
    assert ledger.finish(first) == {A: 10, B: 5}
    assert ledger.finish(second) == {A: 20}
    assert ledger.unfinished() == {}


def test_a_later_bulk_finished_first_commits_nothing_until_the_earlier_one_does() -> None:
    ledger = Ledger()
    first = ledger.open({A: 10})
    second = ledger.open({A: 20, B: 7})
    third = ledger.open({A: 30})
    assert ledger.finish(third) == {}
    # B has no earlier bulk: its run is the prefix.
    assert ledger.finish(second) == {B: 7}
    assert ledger.finish(first) == {A: 30}


def test_a_failed_bulk_holds_back_every_later_one_of_its_partitions() -> None:
    ledger = Ledger()
    ledger.open({A: 10, B: 3})  # failed: never finished, as at a shutdown mid-retry
    later = ledger.open({A: 20})
    other = ledger.open({B: 9})
    assert ledger.finish(later) == {}
    assert ledger.finish(other) == {}
    assert ledger.unfinished() == {A: 2, B: 2}


def test_shutdown_with_one_failed_bulk_commits_only_before_it() -> None:
    ledger = Ledger()
    done = ledger.open({A: 10})
    ledger.open({A: 20})  # Elasticsearch unavailable while stopping
    after = ledger.open({A: 30})
    committed = {**ledger.finish(done), **ledger.finish(after)}
    assert committed == {A: 10}


def test_a_revoked_partition_commits_nothing_more_even_when_it_comes_back() -> None:
    ledger = Ledger()
    old = ledger.open({A: 10, B: 4})
    ledger.forget({A})
    # Assigned again: reading starts over from the committed offset.
    new = ledger.open({A: 6})
    assert ledger.finish(old) == {B: 4}
    assert ledger.finish(new) == {A: 6}


def test_a_bulk_without_partitions_moves_nothing() -> None:
    ledger = Ledger()
    assert ledger.finish(ledger.open({})) == {}
