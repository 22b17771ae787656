"""Indexer throughput against the node's own ceiling, measured the same way.

Records of a realistic node (bench/corpus.py's `node` mix read by the collector into a
file, then given the fields pod metadata from the API adds: labels, namespace labels,
owner; the average size is printed) are loaded into the local Kafka; `python -m pipeline
run` indexes them until the group's lag is zero, and documents/s and the indexer's CPU seconds
are printed. The ceiling posts the same documents as the same bulk bodies (the indexer's
`bulk_bytes` and response filter) with as many requests in flight as the indexer keeps
(`bulks_in_flight`, one connection each), with a bare HTTP client: the node's `_bulk`
ceiling on this machine. Each round measures the ceiling before and after the indexer and
compares the indexer with their mean. Each phase is checked by one count in Elasticsearch.
Rounds repeat on the same topic (`--rounds`, 3), the median round is printed. The node is
warmed up first (`--warm-up`).

Progress is read from the committed offsets, not by counting in Elasticsearch while it
indexes: a count needs a refresh, and a refresh every fraction of a second makes the node
write many small segments and merge them, which slowed whichever phase was polled.

    .venv/bin/python bench/indexer_throughput.py --records 1000000

`--synthetic` uses the old small records (harness/pipeline_run.record, ~500 B, no
enrichment) instead.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from elasticsearch import Elasticsearch

from pipeline.backend import connect
from pipeline.bulk import FILTER
from pipeline.config import OPTIONS
from pipeline.documents import IndexName, document, now
from pipeline.setup import install_templates
from pipeline.templates import SINGLE_NODE

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.corpus import write  # noqa: E402
from harness.pipeline_run import record  # noqa: E402

DEFAULTS = {option.name: option.default for option in OPTIONS}
BULK_BYTES: int = DEFAULTS["bulk_bytes"]
IN_FLIGHT: int = DEFAULTS["bulks_in_flight"]
"""The indexer's own defaults: the ceiling posts bodies of this size, this many at once."""
LINE_BYTES = 231
"""Bytes a line of the `node` mix holds on disk, to size a corpus for N records."""


def enriched(value: bytes, n: int) -> bytes:
    """A collector record with what the API's pod metadata adds for a Deployment's pod with
    the usual labels."""
    doc = orjson.loads(value)
    kube = doc.setdefault("kubernetes", {})
    app = kube.get("pod", {}).get("name", "app").rsplit("-", 2)[0]
    namespace = kube.get("namespace", "default")
    kube["labels"] = {
        "app": app,
        "app.kubernetes.io/name": app,
        "pod-template-hash": f"7d9f5c6b{n % 7}",
    }
    kube["namespace_labels"] = {"kubernetes.io/metadata.name": namespace}
    kube["deployment"] = {"name": app}
    kube["node"] = {"name": "node-a"}
    return orjson.dumps(doc)


def realistic(records: int, seed: int) -> list[bytes]:
    """`records` records of the `node` mix as the collector writes them, enriched."""
    work = Path(tempfile.mkdtemp(prefix="logferry-indexer-bench-"))
    try:
        write(work, "node", records * LINE_BYTES * 1.05 / 1e6, seed=seed)
        out = work / "records.ndjson"
        subprocess.run(
            [
                sys.executable, "-m", "collector", "--once", "--sink", f"file:{out}",
                "--docker-root", str(work / "docker"), "--log-root", str(work / "log"),
                "--state-dir", str(work / "state"), "--metrics-port", "0",
            ],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        lines = out.read_bytes().splitlines()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if len(lines) < records:
        raise SystemExit(f"the corpus gave {len(lines)} records, {records} wanted")
    return [enriched(value, n) for n, value in enumerate(lines[:records])]


def synthetic(records: int, run: str) -> list[bytes]:
    return [orjson.dumps(record(n, run)) for n in range(records)]


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


def load(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """Into a new topic, keyed by container as the collector keys them."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)
    admin.create_topics([new])[topic].result(30)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 50, "compression.type": "lz4"}
    )
    for n, value in enumerate(values):
        at = value.find(b'"container":{"id":"')
        key = value[at + 19 : at + 83] if at >= 0 else str(n % 50).encode()
        while True:
            try:
                producer.produce(topic, value, key)
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


def bodies(values: list[bytes], prefix: str) -> tuple[list[bytes], int]:
    """Bulk bodies of the indexer's size, and how many documents the first one holds."""
    name = IndexName(prefix + "-{kubernetes.namespace}-{@timestamp:%Y.%m.%d}")
    out, body = [], bytearray()
    first = 0
    stamp = now()
    for n, value in enumerate(values):
        body += document(value, name, stamp).lines
        if len(body) >= BULK_BYTES:
            out.append(bytes(body))
            body = bytearray()
            first = first or n + 1
    if body:
        out.append(bytes(body))
    return out, first


def post(connection: http.client.HTTPConnection, body: bytes) -> None:
    headers = {"Content-Type": "application/x-ndjson"}
    connection.request("POST", f"/_bulk?filter_path={','.join(FILTER)}", body, headers)
    # The indexer's filter keeps every item's status: the node builds the same reply.
    reply = connection.getresponse().read()
    assert reply.startswith(b'{"errors":false'), reply[:200]


def ceiling(
    es_url: str, es: Elasticsearch, prefix: str, values: list[bytes], in_flight: int = IN_FLIGHT
) -> tuple[float, str]:
    """The same documents as ready bulk bodies, `in_flight` requests at a time (one
    connection each), as the indexer posts them.

    Documents/s, timed after the first body (connection and index creation excluded) until
    the last is answered, and the node's load meanwhile.
    """
    ready, first = bodies(values, prefix)
    url = urlsplit(es_url)
    connections = [
        http.client.HTTPConnection(url.hostname, url.port, timeout=120) for _ in range(in_flight)
    ]
    post(connections[0], ready[0])
    work: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    for body in ready[1:]:
        work.put(body)
    failures: list[BaseException] = []

    def poster(connection: http.client.HTTPConnection) -> None:
        try:
            while True:
                try:
                    body = work.get_nowait()
                except queue.Empty:
                    return
                post(connection, body)
        except BaseException as exc:  # reported by the caller
            failures.append(exc)

    node = Load()
    node.start()
    started = time.perf_counter()
    threads = [threading.Thread(target=poster, args=(c,)) for c in connections]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rate = (len(values) - first) / (time.perf_counter() - started)
    load = node.stop()
    for connection in connections:
        connection.close()
    if failures:
        raise failures[0]
    indexed = count(es, prefix)
    assert indexed == len(values), f"{indexed} documents searchable, {len(values)} expected"
    return rate, load


def chunks(values: list[bytes], size: int) -> Iterator[list[bytes]]:
    for at in range(0, len(values), size):
        yield values[at : at + size]


class Round(NamedTuple):
    rate: float
    cpu: float
    steady: float
    load: str
    before: float
    after: float
    top_load: str

    @property
    def top(self) -> float:
        """The ceiling: the mean of the one before the indexer and the one after."""
        return (self.before + self.after) / 2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument(
        "--rounds", type=int, default=3, help="ceiling-indexer-ceiling rounds; the median is kept"
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
    parser.add_argument("--synthetic", action="store_true", help="the old small records")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    es_url = os.environ.get("ELASTICSEARCH_URL", "http://127.0.0.1:19200")
    es = connect(es_url, request_timeout=120)
    install_templates(es, SINGLE_NODE, say=lambda _: None)
    run = uuid.uuid4().hex[:8]
    topic = f"bench-{run}"
    values = synthetic(args.records, run) if args.synthetic else realistic(args.records, args.seed)
    size = sum(map(len, values)) / len(values)
    print(
        f"records        {len(values)} {'synthetic' if args.synthetic else 'of the node mix'}, "
        f"{size:.0f} B each on average; bulk bodies of {BULK_BYTES:,} B, {IN_FLIGHT} in flight",
        flush=True,
    )
    load(bootstrap, topic, values)
    # A node just started indexes at half speed for a million documents or so (its code is
    # compiled as it runs, its heap grows): the first round used to be the low one (0.51-0.72
    # of the ceiling), whatever ran in it. Warmed up until two posts in a row agree.
    warm: list[float] = []
    scratch = list(chunks(values, args.warm_up)) if args.warm_up else []
    while scratch and len(warm) < 10 and not (len(warm) > 1 and warm[-1] < warm[-2] * 1.05):
        part = scratch[len(warm) % len(scratch)]
        warm.append(ceiling(es_url, es, f"logferry-bench-{run}-0", part)[0])
        es.indices.delete(index=f"logferry-bench-{run}-*", allow_no_indices=True)
    if warm:
        rates = ", ".join(f"{rate:,.0f}" for rate in warm)
        print(f"warm-up        {args.warm_up} documents at a time: {rates} docs/s", flush=True)
    # Throughput on a shared machine varies by a tenth from minute to minute: each round
    # measures the ceiling right before and right after the indexer, and the median round
    # is the figure.
    rounds: list[Round] = []
    try:
        for n in range(1, args.rounds + 1):
            ours = f"logferry-bench-{run}-{n}a"
            group = f"bench-{topic}-{n}"
            settle()
            before, _ = ceiling(es_url, es, f"logferry-bench-{run}-{n}b", values)
            es.indices.delete(index=f"logferry-bench-{run}-{n}b-*", allow_no_indices=True)
            settle()
            rate, cpu, steady, node_load = indexer(
                bootstrap, es_url, es, topic, group, ours, len(values), args.pipeline
            )
            es.indices.delete(index=f"{ours}-*", allow_no_indices=True)
            settle()
            after, top_load = ceiling(es_url, es, f"logferry-bench-{run}-{n}c", values)
            es.indices.delete(index=f"logferry-bench-{run}-*", allow_no_indices=True)
            this = Round(rate, cpu, steady, node_load, before, after, top_load)
            rounds.append(this)
            print(
                f"round {n}        indexer {rate:,.0f} docs/s, ceiling {before:,.0f} before "
                f"and {after:,.0f} after, ratio {rate / this.top:.2f}",
                flush=True,
            )
    finally:
        es.indices.delete(index=f"logferry-bench-{run}-*", allow_no_indices=True)
        # A million records is a few hundred MB of the broker's disk per run.
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.delete_topics([topic])[topic].result(30)
    ratios = sorted(r.rate / r.top for r in rounds)
    middle = sorted(rounds, key=lambda r: r.rate / r.top)[len(rounds) // 2]
    million = 1e6 / len(values)
    print(f"records        {len(values)} ({os.cpu_count()} cores), median of {len(rounds)} rounds")
    print(f"indexer        {middle.rate:,.0f} docs/s")
    print(
        f"indexer cpu    {middle.cpu:.1f} s in all, {middle.cpu * million:.1f} CPU-s per million "
        "(target <= 6)"
    )
    print(f"  once running {middle.steady * million:.1f} CPU-s per million (start-up left out)")
    print(f"  load         {middle.load} while the indexer ran")
    print(
        f"ceiling        {middle.top:,.0f} docs/s ({middle.before:,.0f} before, "
        f"{middle.after:,.0f} after; same bodies, {IN_FLIGHT} in flight)"
    )
    print(f"  load         {middle.top_load} while the ceiling ran (after)")
    print(
        f"ratio          {middle.rate / middle.top:.2f} of the ceiling, target >= 0.9 "
        f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})"
    )


if __name__ == "__main__":
    main()
