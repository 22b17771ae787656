"""End-to-end latency: written to a log file -> searchable in Elasticsearch.

Plays a node with harness/nodewriter.py at a steady line rate (default 10,000 lines/s for
120 s) while the real collector (pod metadata from the stand-in Kubernetes API), the real
Kafka, pipeline processes and the real Elasticsearch carry the lines. A poller asks
Elasticsearch, several times a second, how many documents each 100 ms slice of runtime
timestamps holds (a date histogram; no refresh is forced, so it sees what a Kibana user
would). Every record's latency is the poll at which its slice first counted it minus the
moment its last byte was written to the file; within a slice records are taken to become
searchable in the order they were written. Resolution: the poll interval. Prints p50, p99
and max, overall and after the first 10 s (warm-up). Target (issue 17): p99 at most 2 s
after warm-up.

Needs a broker and Elasticsearch: KAFKA_BOOTSTRAP_SERVERS and ELASTICSEARCH_URL, else the
local ones of `make services-up` (127.0.0.1:19092, http://127.0.0.1:19200).

    .venv/bin/python bench/e2e_latency.py                 # 10,000 lines/s for 120 s
    .venv/bin/python bench/e2e_latency.py --duration 20   # a shorter run
"""

from __future__ import annotations

import argparse
import bisect
import calendar
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from elasticsearch import Elasticsearch  # noqa: E402

from harness.collector_run import new_topic, start_collector  # noqa: E402
from harness.flow import NAMESPACE_LABELS, NODE, pods_for  # noqa: E402
from harness.k8s_api import KubeAPI, namespace  # noqa: E402
from harness.nodewriter import NodeWriter, Rotation, Truth, default_node  # noqa: E402
from harness.pipeline_run import start_pipeline  # noqa: E402
from pipeline.setup import install_templates  # noqa: E402
from pipeline.templates import SINGLE_NODE  # noqa: E402

SLICE_MS = 100
TARGET_P99 = 2.0
"""Seconds from written to searchable for 99% of the records after warm-up (issue 17)."""


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Ledger:
    """Written times per 100 ms slice of runtime timestamps, and what became searchable."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.written: dict[int, list[float]] = defaultdict(list)
        self.seen: dict[int, int] = defaultdict(int)
        self.latencies: list[tuple[float, float]] = []
        """(written, latency) of every record seen searchable."""
        self.records = 0
        self.seconds: dict[str, int] = {}

    def slice_of(self, stamp: str) -> int:
        head = stamp[:19]
        base = self.seconds.get(head)
        if base is None:
            base = calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S"))
            if len(self.seconds) > 10_000:
                self.seconds.clear()
            self.seconds[head] = base
        fraction = stamp[20:23] if len(stamp) > 20 and stamp[19] == "." else ""
        millis = int(fraction.ljust(3, "0")) if fraction else 0
        return (base * 1000 + millis) // SLICE_MS

    def add(self, record: Truth) -> None:
        key = self.slice_of(record.time)
        with self.lock:
            bisect.insort(self.written[key], record.written)
            self.records += 1

    def searchable(self, key: int, count: int, at: float) -> None:
        with self.lock:
            times = self.written.get(key, [])
            start = self.seen[key]
            end = min(count, len(times))
            for written in times[start:end]:
                self.latencies.append((written, at - written))
            self.seen[key] = max(start, end)

    def oldest_incomplete(self) -> int | None:
        with self.lock:
            open_slices = [k for k, v in self.written.items() if self.seen[k] < len(v)]
        return min(open_slices) if open_slices else None

    def complete(self) -> bool:
        with self.lock:
            return sum(self.seen.values()) >= self.records


class Poller(threading.Thread):
    def __init__(self, es: Elasticsearch, prefix: str, ledger: Ledger, every: float) -> None:
        super().__init__(daemon=True, name="poller")
        self.es = es
        self.prefix = prefix
        self.ledger = ledger
        self.every = every
        self.stopping = threading.Event()
        self.polls = 0
        self.slowest = 0.0
        self.errors = 0
        self.last_error = ""

    def run(self) -> None:
        while not self.stopping.is_set():
            began = time.time()
            oldest = self.ledger.oldest_incomplete()
            if oldest is not None:
                try:
                    self.poll(oldest, began)
                except Exception as exc:
                    self.errors += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
            self.slowest = max(self.slowest, time.time() - began)
            self.stopping.wait(max(0.0, self.every - (time.time() - began)))

    def poll(self, oldest: int, at: float) -> None:
        reply = self.es.options(request_timeout=30).search(
            index=f"{self.prefix}-*",
            size=0,
            query={"range": {"@timestamp": {"gte": oldest * SLICE_MS, "format": "epoch_millis"}}},
            aggs={
                "slices": {
                    "date_histogram": {
                        "field": "@timestamp",
                        "fixed_interval": f"{SLICE_MS}ms",
                        "min_doc_count": 1,
                    }
                }
            },
            allow_no_indices=True,
            ignore_unavailable=True,
        )
        self.polls += 1
        aggregations = reply.body.get("aggregations") or {}
        for bucket in aggregations.get("slices", {}).get("buckets", []):
            self.ledger.searchable(int(bucket["key"]) // SLICE_MS, bucket["doc_count"], at)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def report(name: str, latencies: list[float]) -> str:
    values = sorted(latencies)
    if not values:
        return f"{name}: no records"
    over = sum(1 for v in values if v > TARGET_P99) / len(values) * 100
    return (
        f"{name}: {len(values)} records, p50 {percentile(values, 0.5):.2f} s, "
        f"p99 {percentile(values, 0.99):.2f} s (target <= {TARGET_P99:g}), max {values[-1]:.2f} s, "
        f"over {TARGET_P99:g} s {over:.2f} %"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=10_000, help="lines per second")
    parser.add_argument("--duration", type=float, default=120, help="seconds of writing")
    parser.add_argument("--containers", type=int, default=24)
    parser.add_argument("--pipelines", type=int, default=2)
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between ES polls")
    parser.add_argument("--drain", type=float, default=60, help="seconds to wait at the end")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    )
    parser.add_argument(
        "--elasticsearch-url", default=os.environ.get("ELASTICSEARCH_URL", "http://127.0.0.1:19200")
    )
    parser.add_argument("--keep", action="store_true", help="keep the files and the indices")
    args = parser.parse_args()

    es = Elasticsearch(args.elasticsearch_url, request_timeout=60)
    install_templates(es, SINGLE_NODE, say=lambda _: None)
    prefix = f"logferry-lat{uuid.uuid4().hex[:6]}"
    topic = new_topic(args.bootstrap_servers, partitions=6)
    tmp = Path(tempfile.mkdtemp(prefix="logferry-latency-"))
    specs = default_node(args.containers, args.seed)
    pods, _ = pods_for(specs)
    api = KubeAPI(bookmark_every=5.0)
    for ns, labels in NAMESPACE_LABELS.items():
        api.add(namespace(ns, labels=labels))
    for obj in pods:
        api.add(obj)
    api.up()
    ledger = Ledger()
    writer = NodeWriter(
        tmp,
        specs,
        rate=args.rate,
        docker_rotation=Rotation(max_bytes=10 * 1024 * 1024, max_files=5),
        cri_rotation=Rotation(max_bytes=10 * 1024 * 1024, max_files=5),
        emit=ledger.add,
        seed=args.seed,
    )
    collector = start_collector(
        tmp,
        args.bootstrap_servers,
        topic,
        "--kubernetes",
        "on",
        "--kubeconfig",
        api.kubeconfig(tmp / "kubeconfig"),
        "--node-name",
        NODE,
        "--checkpoint-interval",
        "1",
        *writer.multiline_flags(),
    )
    pipelines = [
        start_pipeline(tmp, args.bootstrap_servers, args.elasticsearch_url, topic, prefix)
        for _ in range(args.pipelines)
    ]
    processes = {"collector": [collector], "pipelines": pipelines}
    poller = Poller(es, prefix, ledger, args.poll)
    try:
        time.sleep(3)  # processes up, consumer group formed
        cpu0 = {n: sum(cpu_seconds(p.pid) for p in ps) for n, ps in processes.items()}
        poller.start()
        started = time.monotonic()
        writer.run(duration=args.duration)
        wrote = time.monotonic() - started
        print(
            f"wrote {writer.lines_written} lines ({writer.lines_written / wrote:.0f}/s, "
            f"{writer.bytes_written / wrote / 1e6:.1f} MB/s), {ledger.records} records, "
            f"{writer.rotations()} rotations, in {wrote:.1f} s",
            flush=True,
        )
        deadline = time.monotonic() + args.drain
        while time.monotonic() < deadline and not ledger.complete():
            time.sleep(0.5)
        cpu = {n: sum(cpu_seconds(p.pid) for p in ps) - cpu0[n] for n, ps in processes.items()}
    finally:
        poller.stopping.set()
        for process in [collector, *pipelines]:
            process.send_signal(signal.SIGTERM)
        for process in [collector, *pipelines]:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        api.down()
        if not args.keep:
            es.indices.delete(index=f"{prefix}-*", allow_no_indices=True, ignore_unavailable=True)
            subprocess.run(["rm", "-rf", str(tmp)], check=False)
    latencies = [lat for _, lat in ledger.latencies]
    begin = min((w for w, _ in ledger.latencies), default=0.0)
    steady = [lat for w, lat in ledger.latencies if w >= begin + 10]
    missing = ledger.records - len(latencies)
    print(report("all", latencies))
    print(report("after 10 s", steady))
    print(
        f"missing after {args.drain:.0f} s: {missing}; {poller.polls} polls "
        f"(slowest {poller.slowest:.2f} s, resolution {args.poll} s, {poller.errors} failed "
        f"{poller.last_error}); CPU seconds per second "
        + ", ".join(f"{n} {c / wrote:.2f}" for n, c in cpu.items())
    )
    return 0 if missing == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
