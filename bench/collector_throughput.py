"""Collector cost on a realistic node's logs (bench/corpus.py), into the local Kafka.

Batch mode (default): per mix, a fresh corpus of unique content is written, then read by
`python -m collector --once` into Kafka; prints MB and lines per CPU-second of the
collector process (user + system, from wait4: wall time on a shared machine says little)
and its peak RSS, next to the issue's targets.

    .venv/bin/python bench/collector_throughput.py --mix node --mix access --megabytes 64

Steady-state mode: the collector follows files a NodeWriter writes at a line rate (the
`node` mix) for a while; prints the cores it used and its peak RSS after a warm-up. That is
what a DaemonSet costs per node.

    .venv/bin/python bench/collector_throughput.py --steady 10000 --duration 60

`--mix repeated` is the old corpus (5,000 lines repeated): it flatters compression, caches and
the fast path, and is no headline figure.

Needs a broker: KAFKA_BOOTSTRAP_SERVERS, or `make services-up` first.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import orjson
from confluent_kafka.admin import AdminClient, NewTopic

from bench.corpus import MIXES, Corpus, specs, write
from harness.nodewriter import NodeWriter, Rotation

REPO = Path(__file__).resolve().parent.parent
TARGETS = {"access": 40.0, "node": 25.0, "node-cri": 25.0, "node-multiline": 20.0}
"""MB per CPU-second the issue asks for (issue 17)."""
RSS_TARGET = 64
WORDS = ["GET", "POST", "/api/v1/orders", "/healthz", "user=alice", "status=200", "trace_id"]


def repeated(root: Path, files: int, megabytes: float) -> tuple[int, int]:
    """The old corpus: 5,000 ~200-byte lines per file, repeated; returns (lines, bytes)."""
    per_file = int(megabytes * 1e6) // files
    total_lines = total_bytes = 0
    for n in range(files):
        cid = f"{n:064x}"
        folder = root / "docker" / cid
        folder.mkdir(parents=True)
        (folder / "config.v2.json").write_bytes(
            orjson.dumps({"ID": cid, "Name": f"/bench-{n}", "Config": {"Image": "bench:1"}})
        )
        block = []
        for i in range(5000):
            text = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(12)) + f" n={n}-{i}"
            text = text + " " + "x" * max(0, 118 - len(text))
            stamp = f"2026-11-27T02:20:{i % 60:02d}.{i:09d}Z"
            line = {"log": text + "\n", "stream": "stdout" if i % 7 else "stderr", "time": stamp}
            block.append(orjson.dumps(line) + b"\n")
        chunk = b"".join(block)
        written = 0
        with open(folder / f"{cid}-json.log", "wb") as f:
            while written < per_file:
                f.write(chunk)
                written += len(chunk)
        total_bytes += written
        total_lines += written // len(chunk) * len(block)
    return total_lines, total_bytes


def written(root: Path, mix: str, megabytes: float, seed: int) -> Corpus:
    """The corpus, written by another process: what writing it takes would otherwise be the
    floor of the collector's peak RSS (see batch)."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        return pool.submit(write, root, mix, megabytes, seed=seed).result()


def topic_for(bootstrap: str) -> str:
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)])[topic].result(30)
    return topic


def child_env(args: argparse.Namespace) -> dict[str, str]:
    """The collector's environment, its own code compiled to bytecode first (__pycache__ in
    the checkout), as pip does when it installs the package (the image): otherwise every
    run under PYTHONDONTWRITEBYTECODE compiles ~280 kB of source, no cost of a DaemonSet."""
    env = {**os.environ, "PYTHONPATH": str(args.repo)}
    folders = [str(args.repo / name) for name in ("collector", "logferry")]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *folders], env=env, check=True)
    return env


def collector(work: Path, args: argparse.Namespace, topic: str, *flags: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "collector",
        "--sink",
        args.sink,
        "--bootstrap-servers",
        args.bootstrap,
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
        *args.collector_flag,
        *flags,
    ]


def batch(mix: str, args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="logferry-bench-"))
    try:
        flags: list[str] = []
        if mix == "repeated":
            lines, size = repeated(work, 50, args.megabytes)
            detail = "5,000 lines repeated (not a headline figure)"
        else:
            corpus = written(work, mix, args.megabytes, args.seed)
            lines, size, flags = corpus.lines, corpus.bytes, corpus.flags
            detail = f"{corpus.non_ascii / lines:.1%} non-ASCII, {corpus.over_16k} 16 KiB pieces"
        topic = topic_for(args.bootstrap) if args.sink == "kafka" else "bench"
        started = time.perf_counter()
        child = subprocess.Popen(
            collector(work, args, topic, "--once", *flags),
            cwd=args.repo,
            env=child_env(args),
        )
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        if child.returncode:
            raise SystemExit(f"collector exited with {child.returncode}")
        cpu = usage.ru_utime + usage.ru_stime
        mb = size / 1e6
        rss = usage.ru_maxrss / 1024
        # The child's ru_maxrss starts at this process's own peak (exec records the peak
        # of the address space it replaces, and subprocess execs from a vfork of ours).
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        floor = f", no more than this bench's own {own:.0f} MiB" if own >= rss else ""
        target = TARGETS.get(mix)
        versus = f" (target >= {target:.0f})" if target else ""
        print(f"mix {mix}: {lines} lines, {mb:.1f} MB, {detail}; sink {args.sink}")
        print(f"  wall {wall:.1f} s, cpu {cpu:.2f} s, load average {os.getloadavg()[0]:.1f}")
        print(f"  {mb / cpu:.1f} MB per CPU-second{versus}, {lines / cpu:,.0f} lines per CPU-s")
        print(f"  peak rss {rss:.0f} MiB (target <= {RSS_TARGET}){floor}", flush=True)
        out = Path(args.sink.removeprefix("file:"))
        if args.sink.startswith("file:") and out.is_file():
            # What a log byte becomes on the wire to Kafka (before compression), for
            # bench/capacity.py's partitions and brokers.
            records = out.stat().st_size
            print(f"  records {records / 1e6:.1f} MB, {records / size:.2f} bytes per log byte")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def reset_peak_rss(pid: int) -> bool:
    """Start the process's peak RSS (VmHWM) again from its current RSS (Linux 4.0 on)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def steady(rate: float, args: argparse.Namespace) -> None:
    """The collector following the `node` mix written at `rate` lines/s."""
    work = Path(tempfile.mkdtemp(prefix="logferry-steady-"))
    rotation = Rotation(max_bytes=50 * 1024 * 1024)
    writer = NodeWriter(
        work,
        specs("node", 12),
        rate=rate,
        docker_rotation=rotation,
        cri_rotation=rotation,
        emit=lambda _record: None,
        docker_links=False,
    )
    topic = topic_for(args.bootstrap) if args.sink == "kafka" else "bench"
    child = subprocess.Popen(
        collector(work, args, topic),
        cwd=args.repo,
        env=child_env(args),
        stderr=subprocess.DEVNULL,
    )
    try:
        thread = threading.Thread(target=writer.run, args=(args.warmup + args.duration,))
        thread.start()
        time.sleep(args.warmup)
        cpu0, wall0, written0 = cpu_seconds(child.pid), time.monotonic(), writer.bytes_written
        # Startup reads what was written while the interpreter started, in one turn: the
        # whole run's peak is then a restart's, not the steady state's.
        startup_rss = peak_rss(child.pid)
        reset = reset_peak_rss(child.pid)
        thread.join()
        cpu, wall = cpu_seconds(child.pid) - cpu0, time.monotonic() - wall0
        mb = writer.bytes_written / 1e6
        print(f"steady {rate:.0f} lines/s of the node mix for {args.duration:.0f} s after warm-up")
        print(f"  {writer.lines_written} lines, {mb:.1f} MB written in all")
        target = " (target <= 0.08 at 10,000 lines/s)" if rate == 10000 else ""
        load = os.getloadavg()[0]
        print(f"  collector {cpu / wall:.3f} cores{target}, load average {load:.1f}")
        window = (writer.bytes_written - written0) / 1e6
        print(f"  {cpu / window:.3f} CPU-seconds per MB written after warm-up")
        if reset:
            after = f"peak rss after warm-up {peak_rss(child.pid):.0f} MiB"
            print(f"  {after} (target <= 48), during warm-up {startup_rss:.0f} MiB", flush=True)
        else:
            print(f"  peak rss {peak_rss(child.pid):.0f} MiB (target <= 48)", flush=True)
    finally:
        child.terminate()
        child.wait(30)
        writer.close()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mix", action="append", choices=(*MIXES, "repeated"))
    parser.add_argument("--megabytes", type=float, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steady", type=float, action="append", help="lines/s to follow")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument(
        "--repo",
        type=Path,
        default=REPO,
        help="the checkout whose collector runs (e.g. `git archive` of another commit)",
    )
    parser.add_argument(
        "--sink", default="kafka", help="kafka, or file:/dev/null to leave Kafka out"
    )
    parser.add_argument(
        "--kafka", action="append", default=[], help="librdkafka KEY=VALUE for the collector"
    )
    parser.add_argument(
        "--collector-flag",
        action="append",
        default=[],
        help="a flag for the collector, e.g. --collector-flag=--parser=none",
    )
    args = parser.parse_args()
    args.bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    if args.steady:
        for rate in args.steady:
            steady(rate, args)
        return
    for mix in args.mix or MIXES:
        batch(mix, args)


if __name__ == "__main__":
    main()
