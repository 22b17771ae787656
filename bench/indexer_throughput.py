"""Indexer throughput against the node's own ceiling.

Loads N contract records into the local Kafka, runs `python -m pipeline run` until the
group's lag is zero, and prints documents/s and the indexer's CPU seconds. Then posts the
same documents as pre-built 5 MB bulk bodies with a bare HTTP client (the node's ceiling
on this machine) and prints the ratio. Each phase is then checked by one count in
Elasticsearch. Rounds of both phases repeat on the same topic (`--rounds`, 3), and the
median round is printed. The node is warmed up first (`--warm-up`).

Progress is read from the committed offsets, not by counting in Elasticsearch while it
indexes: a count needs a refresh, and a refresh every fraction of a second makes the node
write many small segments and merge them, which slowed whichever phase was polled.

    .venv/bin/python bench/indexer_throughput.py --records 1000000
"""

from __future__ import annotations

import argparse
import functools
import http.client
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from elasticsearch import Elasticsearch

from pipeline.backend import connect
from pipeline.documents import IndexName, document, now
from pipeline.setup import install_templates
from pipeline.templates import SINGLE_NODE

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.pipeline_run import record  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def service_pid(name: str) -> int | None:
    """A local service's process (deploy/local), to show how busy it was; None elsewhere."""
    state = Path(os.environ.get("LOGFERRY_SERVICES_DIR", REPO / ".state"))
    try:
        pid = int((state / name / "pid").read_text())
        cpu_seconds(pid)
    except (OSError, ValueError):
        return None
    return pid


def machine_seconds() -> float:
    """CPU seconds all cores of the machine spent busy (neither idle nor waiting for I/O)."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


class Load:
    """How many cores the node, Kafka and the whole machine used between start() and stop().

    When the machine is near all its cores, whatever else runs takes CPU from the node.
    """

    def __init__(self) -> None:
        pids = {"node": service_pid("elasticsearch"), "kafka": service_pid("kafka")}
        self.readers = {
            name: functools.partial(cpu_seconds, pid) for name, pid in pids.items() if pid
        }
        self.readers["machine"] = machine_seconds
        self.before: dict[str, float] = {}
        self.wall = 0.0

    def start(self) -> None:
        self.before = {name: read() for name, read in self.readers.items()}
        self.wall = time.perf_counter()

    def stop(self) -> str:
        wall = time.perf_counter() - self.wall
        cores = {name: (read() - self.before[name]) / wall for name, read in self.readers.items()}
        return ", ".join(f"{name} {used:.2f}" for name, used in cores.items()) + (
            f" of {os.cpu_count()} cores"
        )


def settle() -> None:
    """Write what the last phase left in the page cache before the next phase starts.

    The kernel writes dirty pages back some 30 s after they were written: a million records
    loaded into Kafka, or a phase's segments, were otherwise written out in the middle of the
    next phase, on the same cores.
    """
    os.sync()
    time.sleep(1)


def count(es: Elasticsearch, prefix: str) -> int:
    es.indices.refresh(index=f"{prefix}-*", allow_no_indices=True)
    return es.count(index=f"{prefix}-*", allow_no_indices=True)["count"]


PARTITIONS = 6


def load(bootstrap: str, topic: str, records: int, run: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)
    admin.create_topics([new])[topic].result(30)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 50, "compression.type": "lz4"}
    )
    for n in range(records):
        value = orjson.dumps(record(n, run))
        while True:
            try:
                producer.produce(topic, value, str(n % 50))
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(120)


def indexer(
    bootstrap: str,
    es_url: str,
    es: Elasticsearch,
    topic: str,
    group: str,
    prefix: str,
    records: int,
    extra: list[str],
) -> tuple[float, float, float, str]:
    """Documents/s, CPU seconds in all and while timed, and the node's load meanwhile.

    Each round's indexer is a new consumer group, so it reads the topic from the start.
    """
    process = subprocess.Popen(
        [
            sys.executable, "-m", "pipeline", "run", "--bootstrap-servers", bootstrap,
            "--elasticsearch-url", es_url, "--topic", topic, "--group", group,
            "--index", prefix + "-{kubernetes.namespace}-{@timestamp:%Y.%m.%d}",
            "--metrics-port", "0", "--log-level", "warning", *extra,
        ],
        cwd=REPO,
    )  # fmt: skip
    # Reads the group's offsets without joining it. The topic is new, its offsets start at
    # 0, so their sum is the number of records indexed and committed.
    offsets = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]

    def committed() -> int:
        return sum(max(p.offset, 0) for p in offsets.committed(partitions, timeout=10))

    # Timed from the first commit: process start and joining the group take a few seconds
    # that say nothing about throughput.
    first = 0
    while first == 0:
        time.sleep(0.02)
        first = committed()
    node = Load()
    node.start()
    started = time.perf_counter()
    cpu_before = cpu_seconds(process.pid)
    while committed() < records:
        time.sleep(0.02)
    rate = (records - first) / (time.perf_counter() - started)
    cpu = cpu_seconds(process.pid)
    steady = (cpu - cpu_before) / (records - first) * records
    load = node.stop()
    process.send_signal(signal.SIGTERM)
    process.wait(60)
    offsets.close()
    indexed = count(es, prefix)
    assert indexed == records, f"{indexed} documents searchable, {records} expected"
    return rate, cpu, steady, load


def ceiling(
    es_url: str, es: Elasticsearch, prefix: str, records: int, run: str
) -> tuple[float, str]:
    """The same documents as ready bulk bodies, posted back to back over one connection.

    Documents/s, timed after the first body (connection and index creation excluded) until
    the last is answered, and the node's load meanwhile.
    """
    name = IndexName(prefix + "-{kubernetes.namespace}-{@timestamp:%Y.%m.%d}")
    bodies, body = [], bytearray()
    first = 0
    stamp = now()
    for n in range(records):
        doc = document(orjson.dumps(record(n, run)), name, stamp)
        body += doc.lines
        if len(body) >= 5_000_000:
            bodies.append(bytes(body))
            body = bytearray()
            first = first or n + 1
    if body:
        bodies.append(bytes(body))
    url = urlsplit(es_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    headers = {"Content-Type": "application/x-ndjson"}
    connection.request("POST", "/_bulk?filter_path=errors", bodies[0], headers)
    connection.getresponse().read()
    node = Load()
    node.start()
    started = time.perf_counter()
    for body in bodies[1:]:
        connection.request("POST", "/_bulk?filter_path=errors", body, headers)
        reply = connection.getresponse().read()
        assert reply == b'{"errors":false}', reply[:200]
    rate = (records - first) / (time.perf_counter() - started)
    load = node.stop()
    indexed = count(es, prefix)
    assert indexed == records, f"{indexed} documents searchable, {records} expected"
    return rate, load


class Round(NamedTuple):
    rate: float
    cpu: float
    steady: float
    load: str
    top: float
    top_load: str


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument(
        "--rounds", type=int, default=3, help="indexer-then-ceiling rounds; the median is kept"
    )
    parser.add_argument(
        "--warm-up",
        type=int,
        default=200_000,
        help="documents a post to a scratch index, repeated until the node's rate settles",
    )
    parser.add_argument(
        "--pipeline", action="append", default=[], help="a flag for `pipeline run`, repeatable"
    )
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    es_url = os.environ.get("ELASTICSEARCH_URL", "http://127.0.0.1:19200")
    es = connect(es_url, request_timeout=120)
    install_templates(es, SINGLE_NODE, say=lambda _: None)
    run = uuid.uuid4().hex[:8]
    topic = f"bench-{run}"
    load(bootstrap, topic, args.records, run)
    # A node just started indexes at half speed for a million documents or so (its code is
    # compiled as it runs, its heap grows): the first round used to be the low one (0.51-0.72
    # of the ceiling), whatever ran in it. Warmed up until two posts in a row agree.
    warm: list[float] = []
    while args.warm_up and len(warm) < 10 and not (len(warm) > 1 and warm[-1] < warm[-2] * 1.05):
        warm.append(ceiling(es_url, es, f"logferry-bench-{run}-0", args.warm_up, run)[0])
        es.indices.delete(index=f"logferry-bench-{run}-*", allow_no_indices=True)
    if warm:
        rates = ", ".join(f"{rate:,.0f}" for rate in warm)
        print(f"warm-up        {args.warm_up} documents at a time: {rates} docs/s", flush=True)
    # Throughput on a shared machine varies by a tenth from minute to minute: each round
    # measures the ceiling right after the indexer, and the median round is the figure.
    rounds: list[Round] = []
    try:
        for n in range(1, args.rounds + 1):
            ours, base = f"logferry-bench-{run}-{n}a", f"logferry-bench-{run}-{n}b"
            group = f"bench-{topic}-{n}"
            settle()
            rate, cpu, steady, node_load = indexer(
                bootstrap, es_url, es, topic, group, ours, args.records, args.pipeline
            )
            settle()
            top, top_load = ceiling(es_url, es, base, args.records, run)
            es.indices.delete(index=f"logferry-bench-{run}-*", allow_no_indices=True)
            rounds.append(Round(rate, cpu, steady, node_load, top, top_load))
            print(
                f"round {n}        indexer {rate:,.0f} docs/s, ceiling {top:,.0f} docs/s, "
                f"ratio {rate / top:.2f}",
                flush=True,
            )
    finally:
        es.indices.delete(index=f"logferry-bench-{run}-*", allow_no_indices=True)
        # A million records is a few hundred MB of the broker's disk per run.
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.delete_topics([topic])[topic].result(30)
    ratios = sorted(r.rate / r.top for r in rounds)
    rate, cpu, steady, node_load, top, top_load = sorted(rounds, key=lambda r: r.rate / r.top)[
        len(rounds) // 2
    ]
    million = 1e6 / args.records
    print(f"records        {args.records} ({os.cpu_count()} cores), median of {len(rounds)} rounds")
    print(f"indexer        {rate:,.0f} docs/s")
    print(f"indexer cpu    {cpu:.1f} s in all, {cpu * million:.1f} CPU-s per million")
    print(f"  once running {steady * million:.1f} CPU-s per million (start-up left out)")
    print(f"  load         {node_load} while the indexer ran")
    print(f"ceiling        {top:,.0f} docs/s (pre-built bulk bodies, one connection)")
    print(f"  load         {top_load} while the ceiling ran")
    print(
        f"ratio          {rate / top:.2f} of the ceiling "
        f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})"
    )


if __name__ == "__main__":
    main()
