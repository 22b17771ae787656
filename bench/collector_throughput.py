"""Collector throughput: Docker json-file logs -> `python -m collector --once` -> real Kafka.

Prints lines/s, MB/s, CPU seconds (and MB/s per CPU second, i.e. per core) and peak RSS.
Needs a broker: KAFKA_BOOTSTRAP_SERVERS, or `make services-up` first.

    .venv/bin/python bench/collector_throughput.py --megabytes 1024 --files 50
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parent.parent
WORDS = [
    "GET",
    "POST",
    "/api/v1/orders",
    "/healthz",
    "user=alice",
    "status=200",
    "latency_ms=12",
    "trace_id",
]


def generate(root: Path, files: int, megabytes: int) -> tuple[int, int]:
    """About 200-byte lines spread over `files` containers; returns (lines, bytes)."""
    per_file = megabytes * 1024 * 1024 // files
    total_lines = total_bytes = 0
    for n in range(files):
        cid = f"{n:064x}"
        folder = root / cid
        folder.mkdir(parents=True)
        (folder / "config.v2.json").write_bytes(
            orjson.dumps({"ID": cid, "Name": f"/bench-{n}", "Config": {"Image": "bench:1"}})
        )
        block = []
        for i in range(5000):
            text = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(12)) + f" n={n}-{i}"
            text = text + " " + "x" * max(0, 118 - len(text))
            block.append(
                orjson.dumps(
                    {
                        "log": text + "\n",
                        "stream": "stdout" if i % 7 else "stderr",
                        "time": f"2026-11-27T02:20:{i % 60:02d}.{i:09d}Z",
                    }
                )
                + b"\n"
            )
        chunk = b"".join(block)
        written = 0
        with open(folder / f"{cid}-json.log", "wb") as f:
            while written < per_file:
                f.write(chunk)
                written += len(chunk)
        total_bytes += written
        total_lines += written // len(chunk) * len(block)
    return total_lines, total_bytes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=int, default=1024)
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument(
        "--sink", default="kafka", help="kafka, or file:/dev/null to leave Kafka out"
    )
    parser.add_argument(
        "--kafka", action="append", default=[], help="librdkafka KEY=VALUE for the collector"
    )
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    work = Path(tempfile.mkdtemp(prefix="logferry-bench-"))
    try:
        lines, size = generate(work / "docker", args.files, args.megabytes)
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        if args.sink == "kafka":
            admin = AdminClient({"bootstrap.servers": bootstrap})
            admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)])[
                topic
            ].result(30)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "collector",
                "--once",
                "--sink",
                args.sink,
                "--bootstrap-servers",
                bootstrap,
                "--topic",
                topic,
                "--docker-root",
                str(work / "docker"),
                "--log-root",
                str(work / "log"),
                "--state-dir",
                str(work / "state"),
                "--metrics-port",
                "0",
                *(f"--kafka={option}" for option in args.kafka),
            ],
            check=True,
            cwd=REPO,
        )
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        mb = size / 1e6
        print(f"input          {lines} lines, {mb:.0f} MB in {args.files} files, sink {args.sink}")
        print(f"wall           {wall:.1f} s")
        print(f"throughput     {lines / wall:,.0f} lines/s, {mb / wall:.1f} MB/s")
        print(f"cpu            {cpu:.1f} s on {os.cpu_count()} cores")
        print(f"per core       {mb / cpu:.1f} MB/s per CPU second, {lines / cpu:,.0f} lines/s")
        print(f"peak rss       {after.ru_maxrss / 1024:.0f} MiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
