"""The read scheduler: who is read in a turn, and how much, fairly and under rate limits."""

from __future__ import annotations

from prometheus_client import REGISTRY

from collector.ratelimit import Rate
from collector.schedule import Scheduler


def never(_folder: str) -> bool:
    return False


def test_only_containers_with_something_to_read_are_visited() -> None:
    s = Scheduler(1024, None, poll_all=False)
    folders = [f"c{n}" for n in range(500)]
    assert s.turn(folders, never, 0.0) == []
    s.mark("c7")
    assert s.turn(folders, never, 0.0) == ["c7"]
    assert s.turn(folders, never, 0.0) == []
    assert s.turn(folders, lambda f: f == "c9", 0.0) == ["c9"]


def test_without_notification_every_container_is_visited_every_turn() -> None:
    s = Scheduler(1024, None, poll_all=True)
    assert sorted(s.turn(["a", "b", "c"], never, 0.0)) == ["a", "b", "c"]


def test_the_first_container_of_a_turn_changes_every_turn() -> None:
    s = Scheduler(1024, None, poll_all=True)
    firsts = {s.turn(["a", "b", "c"], never, 0.0)[0] for _ in range(3)}
    assert firsts == {"a", "b", "c"}


def test_a_read_that_filled_its_size_brings_the_container_back_next_turn() -> None:
    s = Scheduler(1024, None, poll_all=False)
    s.spent("a", "pod", None, 0.0, 1024, 10, more=True)
    assert s.turn(["a", "b"], never, 0.0) == ["a"]


def test_a_read_that_reached_the_files_end_waits_for_the_next_write() -> None:
    s = Scheduler(1024, None, poll_all=False)
    s.spent("a", "pod", None, 0.0, 300, 3, more=False)
    assert s.turn(["a", "b"], never, 0.0) == []


def test_a_throttled_pod_waits_for_its_bucket_and_is_visited_when_it_refills() -> None:
    s = Scheduler(1 << 20, None, poll_all=False)
    limit = Rate(1000, lines=False)
    assert s.allowance("a", "pod", limit, 0.0) == 4096
    s.spent("a", "pod", limit, 0.0, 4096, 10, more=True)
    assert s.turn(["a"], never, 0.0) == ["a"]
    assert s.allowance("a", "pod", limit, 0.0) == 0
    assert s.next_due(0.0) is not None
    assert s.turn(["a"], never, 1.0) == []
    due = s.next_due(0.0)
    assert due is not None
    assert 3.0 < due < 3.2
    assert s.turn(["a"], never, 3.2) == ["a"]
    assert s.allowance("a", "pod", limit, 3.2) > 0
    assert s.next_due(3.2) is None


def test_containers_of_one_pod_share_its_limit() -> None:
    s = Scheduler(1 << 20, None, poll_all=False)
    limit = Rate(10, lines=True)
    assert s.allowance("a", "pod", limit, 0.0) > 0
    s.spent("a", "pod", limit, 0.0, 2000, 10, more=False)
    assert s.allowance("b", "pod", limit, 0.0) == 0
    assert s.allowance("c", "other", limit, 0.0) > 0


def test_a_bad_annotation_is_counted_and_the_node_default_applies() -> None:
    node = Rate(500, lines=True)
    s = Scheduler(1 << 20, node, poll_all=False)
    before = REGISTRY.get_sample_value("logferry_collector_rate_limit_invalid_total") or 0
    assert s.limit("a", "lots") == node
    assert s.limit("a", "lots") == node
    after = REGISTRY.get_sample_value("logferry_collector_rate_limit_invalid_total")
    assert after == before + 1
    assert s.limit("a", "2MiB/s") == Rate(2 * 1024 * 1024, lines=False)
    assert s.limit("a", "none") is None
    assert s.limit("b", None) == node


def test_how_far_behind_a_throttled_container_is_shows_until_it_caught_up() -> None:
    s = Scheduler(1024, None, poll_all=False)
    labels = ("shop", "cart-1", "app")

    def shown() -> float | None:
        return REGISTRY.get_sample_value(
            "logferry_collector_throttled_behind_bytes",
            {"namespace": "shop", "pod": "cart-1", "container": "app"},
        )

    s.throttled("a", labels, 12345)
    assert shown() == 12345
    s.caught_up("a")
    assert shown() is None
