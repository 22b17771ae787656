"""Forward listener throughput: 4 concurrent PackedForward senders -> collector -> real Kafka.

Each sender sends chunks of events with the `chunk` option and keeps a few unacknowledged,
as Fluentd's out_forward and Fluent Bit do with acks on. Prints events/s received (the
listener's own event counter) and delivered (acks, each sent once Kafka acknowledged the
chunk under acks=all), the collector's CPU seconds and peak RSS, and the records in the topic.
Needs a broker: KAFKA_BOOTSTRAP_SERVERS, or `make services-up` first.

    .venv/bin/python bench/forward_throughput.py --events 2000000
"""

from __future__ import annotations

import argparse
import gzip
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import msgpack
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parent.parent
PARTITIONS = 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chunk_entries(sender: int, batch: int, compress: bool) -> bytes:
    """One PackedForward `entries` of `batch` events of about 200 bytes each."""
    now = int(time.time())
    entries = b"".join(
        msgpack.packb(
            [
                msgpack.ExtType(0, now.to_bytes(4, "big") + (n * 1000).to_bytes(4, "big")),
                {
                    "message": f"GET /api/v1/orders/{n} 200 user=alice latency_ms=12 " + "x" * 100,
                    "level": "info",
                    "trace_id": uuid.uuid4().hex,
                    "sender": sender,
                    "n": n,
                },
            ]
        )
        for n in range(batch)
    )
    return gzip.compress(entries, 1) if compress else entries


class Sender(threading.Thread):
    def __init__(
        self, port: int, number: int, chunks: int, batch: int, window: int, compress: bool
    ):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.tag = f"bench.sender{number}"
        self.entries = chunk_entries(number, batch, compress)
        self.option = {"size": batch, **({"compressed": "gzip"} if compress else {})}
        self.chunks = chunks
        self.window = threading.Semaphore(window)
        self.acked = 0
        self.last_ack = 0.0
        self.reader = threading.Thread(target=self.read_acks, daemon=True)
        self.sent_bytes = 0

    def run(self) -> None:
        self.reader.start()
        for n in range(self.chunks):
            self.window.acquire()
            frame = msgpack.packb(
                [self.tag, self.entries, {**self.option, "chunk": f"{self.tag}-{n}"}]
            )
            self.sent_bytes += len(frame)
            self.sock.sendall(frame)
        self.reader.join()

    def read_acks(self) -> None:
        replies = msgpack.Unpacker(raw=False)
        while self.acked < self.chunks:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the collector closed the connection")
            replies.feed(data)
            for reply in replies:
                assert "ack" in reply, reply
                self.acked += 1
                self.last_ack = time.perf_counter()
                self.window.release()


def events_received(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("logferry_collector_forward_events_total "):
                return float(line.split()[1])
    return 0.0


def cpu_and_rss(pid: int) -> tuple[float, float]:
    """CPU seconds and peak RSS (MiB) of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    peak = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return cpu, peak


def records_in(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4()}"})
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(PARTITIONS)
        )
    finally:
        consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2_000_000, help="in all, over the senders")
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1000, help="events per chunk")
    parser.add_argument("--window", type=int, default=8, help="unacknowledged chunks a sender")
    parser.add_argument("--gzip", action="store_true", help="CompressedPackedForward")
    parser.add_argument("--sink", default="kafka", help="kafka, or file:/dev/null")
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    topic = f"bench-forward-{uuid.uuid4().hex[:8]}"
    if args.sink == "kafka":
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])[
            topic
        ].result(30)
    port, metrics_port = free_port(), free_port()
    work = Path(tempfile.mkdtemp(prefix="logferry-bench-forward-"))
    collector = subprocess.Popen(
        [
            sys.executable, "-m", "collector", "--sink", args.sink,
            "--bootstrap-servers", bootstrap, "--topic", topic,
            "--forward-port", str(port), "--forward-host", "127.0.0.1",
            "--metrics-port", str(metrics_port), "--kubernetes", "off",
            "--docker-root", str(work / "docker"), "--log-root", str(work / "log"),
            "--state-dir", str(work / "state"),
        ],
        cwd=REPO,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                events_received(metrics_port)
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        chunks = args.events // args.senders // args.batch
        total = chunks * args.batch * args.senders
        senders = [
            Sender(port, n, chunks, args.batch, args.window, args.gzip) for n in range(args.senders)
        ]
        cpu_before, _ = cpu_and_rss(collector.pid)
        started = time.perf_counter()
        for s in senders:
            s.start()
        received_at = None
        while any(s.is_alive() for s in senders) or received_at is None:
            if received_at is None and events_received(metrics_port) >= total:
                received_at = time.perf_counter()
            time.sleep(0.02)
        delivered_at = max(s.last_ack for s in senders)
        cpu_after, peak = cpu_and_rss(collector.pid)
        received = received_at - started
        delivered = delivered_at - started
        sent = sum(s.sent_bytes for s in senders) / 1e6
        mode = "CompressedPackedForward" if args.gzip else "PackedForward"
        print(
            f"input          {total:,} events, {args.senders} senders, {mode} chunks of "
            f"{args.batch}, {args.window} unacked per sender, {sent:.0f} MB, sink {args.sink}"
        )
        print(f"received       {total / received:,.0f} events/s ({received:.1f} s)")
        print(f"delivered      {total / delivered:,.0f} events/s ({delivered:.1f} s, acked)")
        print(f"cpu            {cpu_after - cpu_before:.1f} s of the collector process")
        print(f"per core       {total / (cpu_after - cpu_before):,.0f} events per CPU second")
        print(f"peak rss       {peak:.0f} MiB")
        if args.sink == "kafka":
            print(f"in the topic   {records_in(bootstrap, topic):,} records")
    finally:
        collector.send_signal(signal.SIGTERM)
        collector.wait(60)


if __name__ == "__main__":
    main()
