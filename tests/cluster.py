"""A three-broker Kafka and a three-node Elasticsearch for the cluster fault tests.

Both are started by the project's scripts (deploy/local/kafka.sh with KAFKA_BROKERS=3,
deploy/local/elasticsearch.sh with ES_NODES=3) on ports of their own, beside the one-node
servers the rest of the suite uses, so they are shared by every scenario of a module and
each fault is undone after its test (`restore`). The scripts' node commands make the
faults: kill-node (SIGKILL), stop-node (SIGTERM), start-node, and pid for SIGSTOP/SIGCONT.

LOGFERRY_CLUSTER_KAFKA_PORT, LOGFERRY_CLUSTER_KAFKA_CONTROLLER_PORT, LOGFERRY_CLUSTER_ES_PORT
and LOGFERRY_CLUSTER_ES_TRANSPORT_PORT move them (the first of three consecutive ports each);
unset, the scripts' cluster defaults apply.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from elasticsearch import Elasticsearch

from tests.servers import LOCAL, unavailable

NODES = 3
PORTS = {
    "KAFKA_PORT": "LOGFERRY_CLUSTER_KAFKA_PORT",
    "KAFKA_CONTROLLER_PORT": "LOGFERRY_CLUSTER_KAFKA_CONTROLLER_PORT",
    "ES_PORT": "LOGFERRY_CLUSTER_ES_PORT",
    "ES_TRANSPORT_PORT": "LOGFERRY_CLUSTER_ES_TRANSPORT_PORT",
}
SINGLE_NODE_SETTINGS = ("KAFKA_HEAP", "ES_HEAP", "ES_HEAP_MIN", "SEARCH", "KAFKA_SASL_PORT")
"""Settings a run may give the one-node servers, which the cluster's defaults replace."""
RECOVERY = 240.0
"""Seconds a restarted node may take to be back with every replica in sync (busy machine)."""


def script_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PORTS and k not in SINGLE_NODE_SETTINGS}
    env |= {name: os.environ[mine] for name, mine in PORTS.items() if os.environ.get(mine)}
    return env | {"KAFKA_BROKERS": str(NODES), "ES_NODES": str(NODES)}


@dataclass
class Cluster:
    env: dict[str, str]
    bootstrap: str
    es_url: str
    """Every node's URL, comma-separated, as the script prints it and the pipeline takes it."""
    paused: set[int] = field(default_factory=set)

    def run(self, script: str, *args: str) -> str:
        done = subprocess.run(
            [LOCAL / script, *args], capture_output=True, text=True, env=self.env, timeout=300
        )
        assert done.returncode == 0, f"{script} {' '.join(args)}: {done.stderr[-3000:]}"
        return done.stdout

    # --- Kafka -------------------------------------------------------------------------------

    def broker(self, command: str, node: int) -> None:
        """kafka.sh stop-node / kill-node / start-node NODE."""
        self.run("kafka.sh", command, str(node))

    def start_brokers(self, *nodes: int) -> None:
        """kafka.sh start-node for each of `nodes` at once (each JVM takes seconds to start)."""
        errors: list[BaseException] = []

        def start(node: int) -> None:
            try:
                self.broker("start-node", node)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(node,)) for node in nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    def broker_pid(self, node: int) -> int | None:
        done = subprocess.run(
            [LOCAL / "kafka.sh", "pid", str(node)], capture_output=True, text=True, env=self.env
        )
        return int(done.stdout) if done.returncode == 0 else None

    def pause(self, node: int) -> None:
        """SIGSTOP: the broker holds its connections and answers nothing (a partition)."""
        pid = self.broker_pid(node)
        assert pid is not None, f"broker {node} is not running"
        os.kill(pid, signal.SIGSTOP)
        self.paused.add(node)

    def resume(self, node: int) -> None:
        pid = self.broker_pid(node)
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
        self.paused.discard(node)

    def admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 10000})

    def leaders(self, topic: str) -> dict[int, int]:
        """Partition -> the broker that leads it now (-1 while it has none)."""
        meta = self.admin().list_topics(topic, timeout=30).topics[topic]
        return {p: m.leader for p, m in meta.partitions.items()}

    def busiest_leader(self, topic: str, besides: tuple[int, ...] = ()) -> int:
        """The broker leading the partition that holds the most records, among the brokers
        not in `besides` (those already down)."""
        leaders = self.leaders(topic)
        sizes: dict[int, int] = {}
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "cluster-probe"})
        try:
            for p, leader in leaders.items():
                if leader in besides:
                    continue
                try:
                    sizes[p] = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[
                        1
                    ]
                except KafkaException:  # its leader is changing: not the busiest now
                    sizes[p] = 0
        finally:
            consumer.close()
        load: Counter[int] = Counter()
        for p, n in sizes.items():
            if leaders[p] > 0 and leaders[p] not in besides:
                load[leaders[p]] += n + 1
        assert load, f"no leader outside {besides}: {leaders}"
        return load.most_common(1)[0][0]

    def wait_led_elsewhere(self, topic: str, gone: int, timeout: float = RECOVERY) -> None:
        """Until no partition of `topic` names broker `gone` as its leader (the controller
        fenced it and elected others)."""
        deadline = time.monotonic() + timeout
        leaders: dict[int, int] = {}
        while time.monotonic() < deadline:
            leaders = self.leaders(topic)
            if gone not in leaders.values():
                return
            time.sleep(0.5)
        raise AssertionError(f"broker {gone} still leads after {timeout} s: {leaders}")

    def under_replicated(self) -> list[str]:
        """Partitions (of every topic) whose in-sync replicas are fewer than their replicas."""
        meta = self.admin().list_topics(timeout=30)
        return [
            f"{name}/{p}"
            for name, topic in meta.topics.items()
            for p, m in topic.partitions.items()
            if m.error is not None or len(m.isrs) < len(m.replicas) or m.leader < 0
        ]

    def wait_replicated(self, timeout: float = RECOVERY) -> None:
        deadline = time.monotonic() + timeout
        behind = ["not asked yet"]
        while time.monotonic() < deadline:
            try:
                behind = self.under_replicated()
            except Exception as exc:  # a broker still starting: ask again
                behind = [repr(exc)]
            if not behind:
                return
            time.sleep(0.5)
        raise AssertionError(f"partitions still under-replicated after {timeout} s: {behind[:10]}")

    # --- Elasticsearch -----------------------------------------------------------------------

    def search_node(self, command: str, node: int) -> None:
        """elasticsearch.sh stop-node / kill-node / start-node NODE."""
        self.run("elasticsearch.sh", command, str(node))

    def search_pid(self, node: int) -> int | None:
        done = subprocess.run(
            [LOCAL / "elasticsearch.sh", "pid", str(node)],
            capture_output=True,
            text=True,
            env=self.env,
        )
        return int(done.stdout) if done.returncode == 0 else None

    def primaries_by_node(self, es: Elasticsearch, index: str) -> Counter[int]:
        """Started primary shards of `index` (a pattern) on each node, by node number."""
        shards = es.cat.shards(index=index, format="json", h="prirep,state,node")
        return Counter(
            int(str(s["node"]).rsplit("-", 1)[1])
            for s in shards
            if s["prirep"] == "p" and s["state"] == "STARTED" and s.get("node")
        )

    # --- after each test ---------------------------------------------------------------------

    def restore(self, es: Elasticsearch) -> None:
        """Every node running, every partition fully in sync, the search cluster green."""
        for node in list(self.paused):
            self.resume(node)
        self.start_brokers(*(n for n in range(1, NODES + 1) if self.broker_pid(n) is None))
        for node in range(1, NODES + 1):
            if self.search_pid(node) is None:
                self.search_node("start-node", node)
        self.wait_replicated()
        health = es.options(request_timeout=RECOVERY + 30).cluster.health(
            wait_for_status="green",
            wait_for_nodes=str(NODES),
            timeout=f"{RECOVERY:.0f}s",
        )
        assert health["status"] == "green", f"search cluster not green: {health}"


def status(script: str, env: dict[str, str]) -> bool:
    return subprocess.run([LOCAL / script, "status"], capture_output=True, env=env).returncode == 0


@contextmanager
def cluster() -> Iterator[Cluster]:
    """Both clusters started (in parallel) for the caller, stopped after unless already up."""
    env = script_env()
    was_up = {name: status(name, env) for name in ("kafka.sh", "elasticsearch.sh")}
    results: dict[str, subprocess.CompletedProcess[str]] = {}

    def start(name: str) -> None:
        results[name] = subprocess.run(
            [LOCAL / name, "start"], capture_output=True, text=True, env=env, timeout=600
        )

    threads = [threading.Thread(target=start, args=(name,)) for name in was_up]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        lines: dict[str, str] = {}
        for name, done in results.items():
            if done.returncode != 0:
                unavailable(
                    f"{name} start with {NODES} nodes failed (exit {done.returncode}):\n"
                    f"{done.stderr[-3000:]}"
                )
            lines |= dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
        yield Cluster(env, lines["KAFKA_BOOTSTRAP_SERVERS"], lines["ELASTICSEARCH_URL"])
    finally:
        for name, up in was_up.items():
            if not up:
                subprocess.run([LOCAL / name, "stop"], capture_output=True, env=env)
