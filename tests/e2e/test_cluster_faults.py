"""The whole flow against a three-broker Kafka and a three-node Elasticsearch, under the
faults of clusters: a partition leader killed mid-batch and then a second broker (below
min.insync.replicas), a rolling restart, a search node holding primaries killed, a consumer
group rebalancing every ten seconds, a broker paused (a network partition) for 30 s.

One pair of clusters (tests/cluster.py, started by deploy/local's scripts) serves the module;
every node is back and every replica in sync after each test. Topics have 3 replicas and
min.insync.replicas 2, indices 3 shards with 1 replica. Every test ends with the check of
harness/flow.py: each record the node writer wrote is in Elasticsearch exactly once, and the
session prints written/found/lost/doubled for each.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from harness.flow import Flow
from harness.nodewriter import Rotation, default_node
from pipeline.setup import install_templates
from pipeline.templates import IndexSettings
from tests.cluster import Cluster, cluster

pytestmark = pytest.mark.e2e

Flows = Callable[..., Flow]

CLUSTER_INDICES = IndexSettings(shards=3, replicas=1)
"""Primaries on every node, each with a replica elsewhere."""
DOCKER = Rotation(max_bytes=None, every=4, max_files=30)
"""Two minutes of history: nothing rotates away while the brokers cannot take records."""
CRI = Rotation(max_bytes=None, every=45, max_files=5)
"""kubelet gzips a file at its second rotation: none while delivery waits."""


def seed() -> int:
    """LOGFERRY_E2E_SEED repeats a run's random choices; printed on failure via the name."""
    return int(os.environ.get("LOGFERRY_E2E_SEED", "0") or 0) or random.randrange(1, 10**6)


def wait_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


@pytest.fixture(scope="module")
def clusters() -> Iterator[tuple[Cluster, Elasticsearch]]:
    with cluster() as pair:
        es = Elasticsearch(pair.es_url.split(","), request_timeout=120, retry_on_timeout=True)
        install_templates(es, CLUSTER_INDICES, say=lambda _: None)
        pair.restore(es)
        yield pair, es
        es.close()


@pytest.fixture
def nodes(clusters: tuple[Cluster, Elasticsearch]) -> Cluster:
    return clusters[0]


@pytest.fixture
def flows(tmp_path: Path, clusters: tuple[Cluster, Elasticsearch]) -> Iterator[Flows]:
    """make(name, rate=..., seconds) -> a Flow on the clusters; after the test its processes
    stop, its indices go, and every node is restored."""
    pair, es = clusters
    made: list[Flow] = []
    prefix = f"logferry-c{uuid.uuid4().hex[:8]}"

    def make(name: str, *, rate: float, containers: int = 12, **kwargs: Any) -> Flow:
        s = seed()
        flow = Flow(
            f"{name} [seed {s}]",
            tmp_path,
            pair.bootstrap,
            pair.es_url,
            es,
            prefix,
            default_node(containers, s),
            rate=rate,
            docker_rotation=DOCKER,
            cri_rotation=CRI,
            seed=s,
            replication=-1,
            **kwargs,
        )
        made.append(flow)
        return flow

    yield make
    for flow in made:
        flow.stop()
    pair.restore(es)
    es.indices.delete(index=f"{prefix}-*", allow_no_indices=True, ignore_unavailable=True)


def test_partition_leader_killed_then_a_second_broker(flows: Flows, nodes: Cluster) -> None:
    """kill -9 the leader of the busiest partition at full rate, then a second broker: with
    one broker left, below min.insync.replicas, the collector waits instead of dropping and
    goes on once the brokers are back."""
    flow = flows("cluster: busiest leader kill -9, then a 2nd broker", rate=1200)
    flow.start(pipelines=2, duration=36)
    begin = time.monotonic()
    wait_until(begin + 8)
    first = nodes.busiest_leader(flow.topic)
    nodes.broker("kill-node", first)
    nodes.wait_led_elsewhere(flow.topic, first)
    wait_until(time.monotonic() + 3)
    second = nodes.busiest_leader(flow.topic, besides=(first,))
    nodes.broker("kill-node", second)
    wait_until(time.monotonic() + 10)
    assert not flow.processes_alive(), "a process gave up while below min.insync.replicas"
    nodes.start_brokers(second, first)
    outcome = flow.check(timeout=300)
    flow.assert_exactly_once(outcome)


def test_rolling_restart_of_every_broker(flows: Flows, nodes: Cluster) -> None:
    """Each broker in turn stopped and started, the next once every replica is back in sync
    (what an operator's rolling restart waits for): every leader moves at least once."""
    flow = flows("cluster: rolling restart of 3 brokers", rate=500)
    flow.start(pipelines=2)
    # writes until the restarts are done (the duration only bounds it)
    flow.writer.start(duration=600)
    for node in (1, 2, 3):
        nodes.broker("stop-node", node)
        nodes.broker("start-node", node)
        nodes.wait_replicated()
    flow.writer.stop()
    outcome = flow.check(timeout=300)
    flow.assert_exactly_once(outcome)


def test_search_node_with_primaries_killed(
    flows: Flows, nodes: Cluster, clusters: tuple[Cluster, Elasticsearch]
) -> None:
    """kill -9 the Elasticsearch node holding the most primaries of the flow's indices while
    the pipelines index; its replicas elsewhere take over; restart it."""
    es = clusters[1]
    flow = flows("cluster: search node with primaries kill -9", rate=1000)
    flow.start(pipelines=2, duration=28)
    begin = time.monotonic()
    wait_until(begin + 6)
    holders = nodes.primaries_by_node(es, f"{flow.prefix}-*")
    deadline = time.monotonic() + 120
    while not holders:
        # on a busy machine the first documents may take longer than 6 s to arrive
        assert time.monotonic() < deadline, "no primary of the flow's indices started in 2 min"
        time.sleep(0.5)
        holders = nodes.primaries_by_node(es, f"{flow.prefix}-*")
    victim = holders.most_common(1)[0][0]
    nodes.search_node("kill-node", victim)
    wait_until(time.monotonic() + 10)
    nodes.search_node("start-node", victim)
    outcome = flow.check(timeout=300)
    flow.assert_exactly_once(outcome)


def test_rebalance_storm_three_pipelines_one_killed_every_10s(flows: Flows) -> None:
    """Three pipelines; every 10 s for a minute the oldest is killed with SIGKILL and a new
    one joins: the group rebalances twice each time, mid-bulk."""
    # A killed member's partitions wait for its session to time out: 6 s (the brokers'
    # least) instead of 45 keeps the minute a storm rather than a queue of stalls.
    flow = flows(
        "cluster: 3 pipelines, one kill -9 + restart every 10 s",
        rate=600,
        pipeline_flags=("--kafka", "session.timeout.ms=6000"),
    )
    flow.start(pipelines=3, duration=64)
    begin = time.monotonic()
    for n in range(1, 7):
        wait_until(begin + 10 * n)
        flow.kill_pipeline(flow.pipelines[0])
        flow.start_pipeline()
    outcome = flow.check(timeout=300)
    assert len(flow.dead) == 6
    flow.assert_exactly_once(outcome)


def test_broker_paused_30s(flows: Flows, nodes: Cluster) -> None:
    """SIGSTOP the leader of the busiest partition for 30 s: its connections stay open and
    nothing answers (a network partition); the others take its partitions over, and it
    comes back behind and catches up."""
    flow = flows("cluster: busiest leader paused (SIGSTOP) 30 s", rate=1000)
    flow.start(pipelines=2, duration=42)
    begin = time.monotonic()
    wait_until(begin + 6)
    paused = nodes.busiest_leader(flow.topic)
    nodes.pause(paused)
    wait_until(time.monotonic() + 30)
    nodes.resume(paused)
    outcome = flow.check(timeout=300)
    flow.assert_exactly_once(outcome)
