"""Fairness: one container writing fast beside quiet ones; how late the quiet ones' lines are.

One CRI container writes `--noisy-mbps` MB/s (issue 20: 20) while `--quiet` containers (10)
write `--quiet-rate` lines/s each (10); the collector ships them all into the local Kafka.
For the quiet containers' lines written after the warm-up it prints the delay from the
write to the broker's append (the topic stamps records with LogAppendTime, so a slow
consumer does not count): p50, p99 and max (issue 20's target: p99 within 1 s), with the
noisy container's write and delivery rates and the collector's cores. The noisy file
rotates at 100 MB, keeping two rotated files as kubelet would; what the collector could not
read before a rotated file was removed is counted by the collector
(logferry_collector_unread_bytes_let_go).

    .venv/bin/python bench/fairness.py --duration 30
    .venv/bin/python bench/fairness.py --duration 30 -- --read-quantum 256KiB

Flags after `--` go to the collector. Needs a broker: KAFKA_BOOTSTRAP_SERVERS, or
`make services-up` first.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parent.parent
TARGET_P99 = 1.0
ROTATE_BYTES = 100 * 1000 * 1000
KEEP_ROTATED = 2


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stamp() -> bytes:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z").encode()


def container(root: Path, ns: str, pod: str) -> Path:
    folder = root / "log" / "pods" / f"{ns}_{pod}_{uuid.uuid4()}" / "app"
    folder.mkdir(parents=True)
    return folder / "0.log"


class Noisy(threading.Thread):
    """Writes `rate` bytes/s of unique ~400-byte lines, rotating like kubelet (no gzip)."""

    def __init__(self, path: Path, rate: float, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.path, self.rate, self.stop = path, rate, stop
        self.written = 0
        # Unique content without a line's worth of Python per byte: a counter and a window
        # into a random buffer that moves with it.
        self.noise = os.urandom(1 << 20).hex().encode()

    def run(self) -> None:
        out = open(self.path, "ab")  # noqa: SIM115 - reopened on rotation
        size, n, start, rotated = 0, 0, time.monotonic(), []
        while not self.stop.is_set():
            due = int((time.monotonic() - start) * self.rate) - self.written
            if due <= 0:
                time.sleep(0.005)
                continue
            head = stamp() + b" stdout F noisy "
            lines = []
            got = 0
            while got < due:
                at = (n * 7919) % (len(self.noise) - 360)
                line = b"%s%d %s\n" % (head, n, self.noise[at : at + 360])
                lines.append(line)
                got += len(line)
                n += 1
            out.write(b"".join(lines))
            out.flush()
            self.written += got
            size += got
            if size >= ROTATE_BYTES:
                out.close()
                name = self.path.with_name(f"0.log.{n}")
                os.rename(self.path, name)
                rotated.append(name)
                while len(rotated) > KEEP_ROTATED:
                    os.unlink(rotated.pop(0))
                out = open(self.path, "ab")  # noqa: SIM115
                size = 0
        out.close()


def quiet_writer(paths: list[Path], rate: float, stop: threading.Event) -> None:
    files = [open(p, "ab") for p in paths]  # noqa: SIM115 - closed below
    seq = 0
    start = time.monotonic()
    while not stop.is_set():
        for n, f in enumerate(files):
            f.write(b"%s stdout F quiet %d %d %d\n" % (stamp(), n, seq, time.time_ns()))
            f.flush()
        seq += 1
        time.sleep(max(0.0, start + seq / rate - time.monotonic()))
    for f in files:
        f.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--noisy-mbps", type=float, default=20.0)
    parser.add_argument("--quiet", type=int, default=10)
    parser.add_argument("--quiet-rate", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", ""))
    parser.add_argument("flags", nargs="*", help="flags for the collector (after --)")
    args = parser.parse_args()
    if not args.bootstrap:
        sys.exit("needs KAFKA_BOOTSTRAP_SERVERS or --bootstrap")
    work = Path(tempfile.mkdtemp(prefix="logferry-fair-"))
    topic = f"fair-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    # The broker stamps each record as it appends it: "in Kafka" is that moment, not when a
    # consumer sharing this machine got round to it.
    made = NewTopic(
        topic,
        num_partitions=6,
        replication_factor=1,
        config={"message.timestamp.type": "LogAppendTime"},
    )
    admin.create_topics([made])[topic].result(timeout=30)
    noisy_path = container(work, "load", "noisy")
    quiet_paths = [container(work, "apps", f"quiet-{n}") for n in range(args.quiet)]
    for p in (noisy_path, *quiet_paths):
        p.touch()
    command = [
        sys.executable,
        "-m",
        "collector",
        *("--docker-root", str(work / "docker"), "--log-root", str(work / "log")),
        *("--state-dir", str(work / "state"), "--metrics-port", "0"),
        *("--sink", "kafka", "--bootstrap-servers", args.bootstrap, "--topic", topic),
        *args.flags,
    ]
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": f"fair-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    stop, done = threading.Event(), threading.Event()
    latencies: list[float] = []
    counts = {"quiet": 0, "noisy_bytes": 0}
    measure_from = [0]

    def consume() -> None:
        while not done.is_set():
            for message in consumer.consume(num_messages=10_000, timeout=0.2):
                if message.error() is not None:
                    continue
                value = message.value()
                if b'"quiet ' not in value:
                    counts["noisy_bytes"] += len(value)
                    continue
                now = message.timestamp()[1] * 1_000_000
                written = int(orjson.loads(value)["message"].rsplit(" ", 1)[1])
                counts["quiet"] += 1
                if written >= measure_from[0]:
                    latencies.append((now - written) / 1e9)

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    with open(work / "collector.log", "wb") as errors:
        child = subprocess.Popen(
            command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=errors
        )
    try:
        time.sleep(2)
        noisy = Noisy(noisy_path, args.noisy_mbps * 1e6, stop)
        quiet = threading.Thread(
            target=quiet_writer, args=(quiet_paths, args.quiet_rate, stop), daemon=True
        )
        noisy.start()
        quiet.start()
        time.sleep(args.warmup)
        measure_from[0] = time.time_ns()
        cpu0, wall0, written0 = cpu_seconds(child.pid), time.monotonic(), noisy.written
        delivered0 = counts["noisy_bytes"]
        time.sleep(args.duration)
        stop.set()
        cpu, wall = cpu_seconds(child.pid) - cpu0, time.monotonic() - wall0
        written = (noisy.written - written0) / 1e6 / wall
        delivered = (counts["noisy_bytes"] - delivered0) / 1e6 / wall
        noisy.join()
        quiet.join()
        expected = args.quiet * int(args.duration * args.quiet_rate)
        deadline = time.monotonic() + 30
        while len(latencies) < expected and time.monotonic() < deadline:
            time.sleep(0.2)
        done.set()
        reader.join()
        latencies.sort()
        print(
            f"fairness: 1 container at {args.noisy_mbps:g} MB/s beside {args.quiet} at "
            f"{args.quiet_rate:g} lines/s, {wall:.0f} s after a {args.warmup:g} s warm-up"
        )
        print(f"  flags: {' '.join(args.flags) or '(defaults)'}")
        if latencies:
            p50 = latencies[len(latencies) // 2]
            p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
            print(
                f"  quiet lines written -> in Kafka: p50 {p50 * 1000:.0f} ms, p99 "
                f"{p99 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms "
                f"({len(latencies)} lines; target p99 <= {TARGET_P99:g} s)"
            )
        print(f"  quiet lines arrived: {len(latencies)} of about {expected}")
        print(f"  noisy: {written:.1f} MB/s written, {delivered:.1f} MB/s of records delivered")
        print(f"  collector {cpu / wall:.2f} cores, load average {os.getloadavg()[0]:.1f}")
    finally:
        child.terminate()
        child.wait(30)
        consumer.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
