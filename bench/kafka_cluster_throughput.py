"""What the brokers of a three-broker cluster spend on a MB of records (bench/capacity.py's
Kafka input).

Sends the records of a JSON-lines file (what the collector writes with `--sink file:PATH`)
with the collector's own producer settings (acks=all, idempotence, lz4) into a new topic of
3 replicas and min.insync.replicas 2 on the cluster of deploy/local/kafka.sh with
KAFKA_BROKERS=3, and prints the records' MB/s, the CPU seconds the three brokers spent
(leaders and followers together) per MB of records, and the bytes they stored per byte of
records (replicas and compression together).

    KAFKA_BROKERS=3 deploy/local/kafka.sh start
    .venv/bin/python bench/collector_throughput.py --mix node --megabytes 64 \\
        --sink file:/tmp/records.jsonl
    KAFKA_BROKERS=3 .venv/bin/python bench/kafka_cluster_throughput.py /tmp/records.jsonl
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
import zlib
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from collector.sink import KAFKA_DEFAULTS  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def brokers() -> list[tuple[int, Path]]:
    """Each broker's pid and data folder, from deploy/local/kafka.sh."""
    found = []
    for node in range(1, int(os.environ.get("KAFKA_BROKERS", "3")) + 1):
        done = subprocess.run(
            [REPO / "deploy/local/kafka.sh", "pid", str(node)], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise SystemExit(f"broker {node} is not running (KAFKA_BROKERS=3 kafka.sh start)")
        state = Path(os.environ.get("LOGFERRY_SERVICES_DIR", REPO / ".state"))
        found.append((int(done.stdout), state / "kafka-cluster" / f"broker-{node}" / "data"))
    return found


def stored(folders: list[Path], topic: str) -> int:
    return sum(
        f.stat().st_size
        for folder in folders
        for part in folder.glob(f"{topic}-*")
        for f in part.glob("*.log")
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("records", type=Path, help="JSON lines, one record a line")
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19492,127.0.0.1:19493")
    values = args.records.read_bytes().splitlines()
    size = sum(len(v) for v in values)
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics(
        [
            NewTopic(
                topic, args.partitions, replication_factor=3, config={"min.insync.replicas": "2"}
            )
        ]
    )[topic].result(30)
    nodes = brokers()
    producer = Producer({**KAFKA_DEFAULTS, "bootstrap.servers": bootstrap})
    try:
        before = sum(cpu_seconds(pid) for pid, _ in nodes)
        started = time.perf_counter()
        for value in values:
            key = b"%d" % (zlib.crc32(value[:64]) % 64)
            while True:
                try:
                    producer.produce(topic, value, key)
                    break
                except BufferError:
                    producer.poll(0.05)
        assert producer.flush(300) == 0, "records left undelivered"
        wall = time.perf_counter() - started
        cpu = sum(cpu_seconds(pid) for pid, _ in nodes) - before
        disk = stored([folder for _, folder in nodes], topic)
    finally:
        admin.delete_topics([topic])[topic].result(30)
    mb = size / 1e6
    print(f"records        {len(values)} ({mb:.1f} MB), 3 replicas, min.insync.replicas 2, lz4")
    print(f"  wall {wall:.1f} s, {mb / wall:.1f} MB/s, load average {os.getloadavg()[0]:.1f}")
    print(f"  brokers cpu {cpu:.1f} s, {cpu / mb:.3f} CPU-s per MB of records (all 3)")
    print(f"  stored {disk / 1e6:.1f} MB, {disk / size:.2f} bytes per byte of records")


if __name__ == "__main__":
    main()
