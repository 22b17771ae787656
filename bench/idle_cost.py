"""What an idle node costs: the collector following many open files that nobody writes.

Writes `--files` CRI log files (a few lines each, one container each), lets the collector read
them all into the sink, then measures the collector process's CPU (user + system, from
/proc) over `--duration` seconds while nothing is written: the cost every node pays when
its containers are quiet. Issue 17's target: at most 0.005 cores with 500 files open.

    .venv/bin/python bench/idle_cost.py --files 500 --duration 30
    .venv/bin/python bench/idle_cost.py --files 500 --duration 30 -- --inotify false

Flags after `--` go to the collector. `--sink kafka` (default) needs a broker:
KAFKA_BOOTSTRAP_SERVERS, or `make services-up` first; `--sink file` needs none.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parent.parent
TARGET = 0.005
LINES = 3


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_files(pid: int, root: Path) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd).startswith(str(root)):
                count += 1
        except OSError:
            continue
    return count


def node(root: Path, files: int) -> None:
    for n in range(files):
        folder = root / "log" / "pods" / f"idle_pod-{n}_uid-{n}" / "app"
        folder.mkdir(parents=True)
        lines = (
            f"2026-12-01T00:00:{i:02d}.000000001Z stdout F pod {n} line {i} {uuid.uuid4()}\n"
            for i in range(LINES)
        )
        (folder / "0.log").write_text("".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--sink", choices=("kafka", "file"), default="kafka")
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", ""))
    parser.add_argument("flags", nargs="*", help="flags for the collector (after --)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="logferry-idle-"))
    node(work, args.files)
    out = work / "records.jsonl"
    if args.sink == "kafka":
        if not args.bootstrap:
            sys.exit("--sink kafka needs KAFKA_BOOTSTRAP_SERVERS or --bootstrap")
        topic = f"idle-{uuid.uuid4().hex[:10]}"
        admin = AdminClient({"bootstrap.servers": args.bootstrap})
        admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)])[
            topic
        ].result(timeout=30)
        sink = ["--sink", "kafka", "--bootstrap-servers", args.bootstrap, "--topic", topic]
    else:
        sink = ["--sink", f"file:{out}"]
    command = [
        sys.executable,
        "-m",
        "collector",
        *("--docker-root", str(work / "docker"), "--log-root", str(work / "log")),
        *("--state-dir", str(work / "state"), "--metrics-port", "0"),
        *sink,
        *args.flags,
    ]
    with open(work / "collector.log", "wb") as errors:
        child = subprocess.Popen(
            command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=errors
        )
    try:
        # Caught up: every file open, and (file sink) every line written out.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and open_files(child.pid, work / "log") < args.files:
            time.sleep(0.5)
        if args.sink == "file":
            while time.monotonic() < deadline:
                if out.exists() and out.read_bytes().count(b"\n") >= args.files * LINES:
                    break
                time.sleep(0.5)
        # Checkpoints saved, deliveries reported: then the idle state begins.
        time.sleep(5)
        held = open_files(child.pid, work / "log")
        cpu0, wall0 = cpu_seconds(child.pid), time.monotonic()
        time.sleep(args.duration)
        cpu, wall = cpu_seconds(child.pid) - cpu0, time.monotonic() - wall0
        print(f"idle: {held} log files open, nothing written, {wall:.0f} s, sink {args.sink}")
        print(f"  collector {cpu / wall:.4f} cores ({cpu:.2f} CPU-seconds); target <= {TARGET}")
        print(f"  flags: {' '.join(args.flags) or '(defaults)'}", flush=True)
    finally:
        child.terminate()
        child.wait(30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
