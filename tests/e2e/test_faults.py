"""Files -> collector -> Kafka -> two pipelines -> Elasticsearch, whole and under faults.

Every test ends with the same check (harness/flow.py): each record the node writer wrote
is in Elasticsearch exactly once, by `_id` and by content, traces joined, metadata from the
stand-in Kubernetes API on every document. The session prints written/found/lost/doubled for
each test. The sizes keep `make test` inside its budget on a 2-core machine; the `long`
variants (LOGFERRY_LONG=1) run the same scenarios several times bigger.
"""

from __future__ import annotations

import os
import random
import signal
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from harness.flow import Flow
from harness.nodewriter import Rotation, Spec, default_node
from tests.integration.es_proxy import proxy
from tests.servers import Outage

pytestmark = pytest.mark.e2e

Flows = Callable[..., Flow]


@dataclass(frozen=True)
class Size:
    containers: int
    rate: float
    """Lines per second, all containers together."""
    seconds: float
    """How long the writer writes (fault tests: around the fault)."""


NORMAL = Size(containers=12, rate=1200, seconds=12)
LONG = Size(containers=24, rate=3000, seconds=180)


def sizes(normal: Size, long: Size) -> pytest.MarkDecorator:
    return pytest.mark.parametrize(
        "size",
        [
            pytest.param(normal, id="normal"),
            pytest.param(long, id="long", marks=[pytest.mark.long, pytest.mark.timeout(3600)]),
        ],
    )


def seed() -> int:
    """LOGFERRY_E2E_SEED repeats a run's random choices; printed on failure via the name."""
    return int(os.environ.get("LOGFERRY_E2E_SEED", "0") or 0) or random.randrange(1, 10**6)


def wait_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


@sizes(NORMAL, LONG)
def test_every_record_once_with_metadata(flows: Flows, size: Size) -> None:
    s = seed()
    flow = flows(
        f"no fault [seed {s}]",
        default_node(size.containers, s),
        rate=size.rate,
        docker_rotation=Rotation(max_bytes=512 * 1024, max_files=5),
        cri_rotation=Rotation(max_bytes=768 * 1024, max_files=5),
        seed=s,
    )
    flow.start(pipelines=2, duration=size.seconds)
    outcome = flow.check(timeout=240 + 2 * size.seconds)
    assert flow.writer.rotations() > 0
    flow.assert_exactly_once(outcome)


@sizes(Size(12, 1000, 30), Size(24, 2000, 240))
def test_collector_killed_9_ten_times(flows: Flows, size: Size) -> None:
    s = seed()
    rng = random.Random(s)
    kills = 10 if size.seconds < 60 else 40
    flow = flows(
        f"collector kill -9 x{kills} [seed {s}]",
        default_node(size.containers, s),
        rate=size.rate,
        docker_rotation=Rotation(max_bytes=None, every=3, max_files=10),
        # kubelet's shortest period: a file unread through two rotations is gzipped away.
        cri_rotation=Rotation(max_bytes=None, every=10, max_files=5),
        seed=s,
    )
    flow.start(pipelines=2, duration=size.seconds)
    window = size.seconds - 4
    for _ in range(kills):
        time.sleep(rng.uniform(0.2, 2 * window / kills))
        flow.kill_collector(signal.SIGKILL)
        flow.start_collector()
    flow.writer.join()
    outcome = flow.check(timeout=240 + 2 * size.seconds)
    flow.assert_exactly_once(outcome)


@sizes(Size(12, 800, 50), Size(24, 2000, 150))
def test_kafka_broker_stopped_20s(flows: Flows, size: Size, kafka_outage: Outage) -> None:
    s = seed()
    flow = flows(
        f"Kafka broker stopped 20 s [seed {s}]",
        default_node(size.containers, s),
        rate=size.rate,
        docker_rotation=Rotation(max_bytes=None, every=4, max_files=30),
        # kubelet gzips a file at its second rotation: none while the collector may be
        # unable to open files (kubelet itself rotates at most every 10 s)
        cri_rotation=Rotation(max_bytes=None, every=45, max_files=5),
        seed=s,
    )
    flow.start(pipelines=2, duration=size.seconds)
    time.sleep(8)
    down = kafka_outage(20)
    assert down >= 20
    outcome = flow.check(timeout=240 + 2 * size.seconds)
    flow.assert_exactly_once(outcome)


@sizes(Size(12, 800, 50), Size(24, 2000, 150))
def test_elasticsearch_stopped_30s(flows: Flows, size: Size, elasticsearch_outage: Outage) -> None:
    s = seed()
    flow = flows(
        f"Elasticsearch stopped 30 s [seed {s}]",
        default_node(size.containers, s),
        rate=size.rate,
        docker_rotation=Rotation(max_bytes=1024 * 1024, max_files=10),
        cri_rotation=Rotation(max_bytes=2 * 1024 * 1024, max_files=5),
        seed=s,
    )
    flow.start(pipelines=2, duration=size.seconds)
    time.sleep(8)
    down = elasticsearch_outage(30)
    assert down >= 30
    outcome = flow.check(timeout=240 + 2 * size.seconds)
    flow.assert_exactly_once(outcome)


@sizes(Size(12, 1000, 30), Size(24, 2500, 180))
def test_pipeline_killed_and_another_joins(flows: Flows, size: Size) -> None:
    s = seed()
    flow = flows(
        f"pipeline killed, another joins [seed {s}]",
        default_node(size.containers, s),
        rate=size.rate,
        docker_rotation=Rotation(max_bytes=1024 * 1024, max_files=10),
        cri_rotation=Rotation(max_bytes=2 * 1024 * 1024, max_files=5),
        seed=s,
    )
    flow.start(pipelines=2, duration=size.seconds)
    begin = time.monotonic()
    rounds = 1 if size.seconds < 60 else 4
    step = size.seconds / (rounds + 1)
    for n in range(rounds):
        wait_until(begin + step * (n + 0.5))
        flow.kill_pipeline(flow.pipelines[0])
        wait_until(begin + step * (n + 1))
        flow.start_pipeline()
    outcome = flow.check(timeout=240 + 2 * size.seconds)
    flow.assert_exactly_once(outcome)


def bulk_node(containers: int, s: int) -> list[Spec]:
    """Mostly 0.5-6 KiB lines (some over 16 KiB), plus a Java and a Python container."""
    specs = [
        Spec("shop", f"bulk-{n}-5d8c7b-{n:05d}", "app", "docker" if n % 2 else "cri", "bulk")
        for n in range(containers - 2)
    ]
    for spec in specs:
        spec.labels = {"app": "bulk"}
        spec.deployment = spec.pod.rsplit("-", 2)[0]
    specs += [s for s in default_node(4, s) if s.content in ("java", "python")]
    return specs


@sizes(Size(6, 2200, 10), Size(12, 2200, 60))
def test_rotation_every_second_at_5_mb_s(flows: Flows, size: Size) -> None:
    s = seed()
    every_second = Rotation(max_bytes=None, every=1.0, max_files=5)
    flow = flows(
        f"rotation every second at 5 MB/s [seed {s}]",
        bulk_node(size.containers, s),
        rate=size.rate,
        docker_rotation=every_second,
        cri_rotation=every_second,
        seed=s,
    )
    # The rotations (one a second per container) are what this test is about: a busy machine
    # rotates later than the clock says, so the writer goes on until they happened, within a
    # bound; what it managed per second is printed, not asserted.
    wanted = len(flow.specs) * size.seconds
    flow.start(pipelines=2, duration=size.seconds * 6)
    started = time.monotonic()
    while flow.writer.running() and flow.writer.rotations() < wanted:
        time.sleep(0.1)
    flow.writer.stop()
    took = time.monotonic() - started
    outcome = flow.check(timeout=240 + 2 * size.seconds)
    rate = flow.writer.bytes_written / took / 1e6
    rotations = flow.writer.rotations()
    print(f"wrote {rate:.1f} MB/s, {rotations} rotations in {took:.0f} s")
    flow.assert_exactly_once(outcome)
    assert rotations >= wanted, f"{rotations} rotations in {took:.0f} s, wanted {wanted}"


@sizes(Size(12, 500, 90), Size(24, 1500, 120))
def test_collector_stopped_a_minute_catches_up(flows: Flows, size: Size) -> None:
    s = seed()
    flow = flows(
        f"collector stopped 60 s [seed {s}]",
        default_node(size.containers, s),
        rate=size.rate,
        # Docker keeps 30 files: 150 s of history, so nothing rotates away meanwhile.
        docker_rotation=Rotation(max_bytes=None, every=5, max_files=30),
        # kubelet keeps one rotated file uncompressed: rotate once while the collector is away
        # (at 40 s), the next time (100 s) after it caught up.
        cri_rotation=Rotation(max_bytes=None, every=60, first=40, max_files=5),
        seed=s,
    )
    begin = time.monotonic()
    flow.start(pipelines=2, duration=size.seconds)
    wait_until(begin + 10)
    assert flow.kill_collector(signal.SIGTERM) == 0
    before = flow.writer.rotations("docker"), flow.writer.rotations("cri")
    wait_until(begin + 70)
    after = flow.writer.rotations("docker"), flow.writer.rotations("cri")
    flow.start_collector()
    outcome = flow.check(timeout=240 + 2 * size.seconds)
    assert after[0] > before[0], "no Docker rotation while the collector was stopped"
    assert after[1] > before[1], "no kubelet rotation while the collector was stopped"
    flow.assert_exactly_once(outcome)


@sizes(Size(12, 1000, 30), Size(24, 2500, 180))
def test_elasticsearch_answers_429_for_some_items_and_pipelines_are_stopped_mid_retry(
    flows: Flows, size: Size, elasticsearch_url: str
) -> None:
    """Elasticsearch answering 429 for one document in twenty (each up to three times),
    while a pipeline is stopped with SIGTERM and another joins: a bulk still retrying at
    the signal is left uncommitted, and so is everything after it in its partitions.

    The 429s come from the small proxy in front of the real Elasticsearch
    (tests/integration/es_proxy.py): a real node refuses items only under load a test
    cannot produce on cue."""
    s = seed()

    def busy(doc_id: str, before: int) -> bool:
        return before < 3 and zlib.crc32(f"{s}-{doc_id}".encode()) % 20 == 0

    with proxy(elasticsearch_url, busy) as (url, state):
        flow = flows(
            f"429 for some items, pipelines stopped mid-retry [seed {s}]",
            default_node(size.containers, s),
            rate=size.rate,
            seed=s,
        )
        flow.es_url = url
        flow.start(pipelines=2, duration=size.seconds)
        begin = time.monotonic()
        rounds = 1 if size.seconds < 60 else 4
        step = size.seconds / (rounds + 1)
        for n in range(rounds):
            wait_until(begin + step * (n + 0.5))
            stopping = flow.pipelines[0]
            stopping.send_signal(signal.SIGTERM)
            assert stopping.wait(60) == 0
            flow.pipelines.remove(stopping)
            flow.dead.append(stopping)
            wait_until(begin + step * (n + 1))
            flow.start_pipeline()
        outcome = flow.check(timeout=240 + 2 * size.seconds)
    assert sum(state.refused.values()) > 0
    flow.assert_exactly_once(outcome)
