"""`make demo` on a machine without Docker: a node's logs flowing into Elasticsearch.

Starts the local Kafka and Elasticsearch (deploy/local), or uses those named in
KAFKA_BOOTSTRAP_SERVERS and ELASTICSEARCH_URL, installs the templates, plays a
node's container runtimes with harness/nodewriter.py, runs the collector and the pipeline as
real processes, shows progress, and ends with what one would ask Kibana. The servers stay
up afterwards; `make services-down` stops them.

The demo watches its own workers: if the collector or the pipeline dies, it stops with the
worker's last log lines and exits 1 instead of printing a summary of a broken run. Ctrl-C
stops the workers and says how to stop the servers.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from elasticsearch import Elasticsearch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from harness.nodewriter import NodeWriter, Rotation, default_node  # noqa: E402

SECONDS = float(os.environ.get("DEMO_SECONDS", "45"))
RATE = float(os.environ.get("DEMO_RATE", "400"))
WORK = Path(os.environ.get("DEMO_WORK", REPO / ".state" / "demo"))
SERVERS_HINT = "The servers keep running; stop them with `make services-down`."


class WorkerDied(Exception):
    """A worker process ended before the demo asked it to."""


def start_service(script: str, variable: str) -> str:
    """The server named in the environment (as `make services-up` prints), else a local one."""
    if os.environ.get(variable):
        return os.environ[variable]
    done = subprocess.run(
        [REPO / "deploy" / "local" / script, "start"], capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"demo: {script} start failed:\n{done.stderr}")
    return done.stdout.strip().split("=", 1)[1]


def spawn(name: str, *args: str) -> subprocess.Popen[bytes]:
    log = open(WORK / f"{name}.log", "ab")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=log,
        stderr=log,
    )
    (WORK / f"{name}.pid").write_text(f"{process.pid}\n")
    return process


def check(workers: dict[str, subprocess.Popen[bytes]]) -> None:
    """Raises WorkerDied, with the worker's last log lines, if one has ended."""
    for name, process in workers.items():
        code = process.poll()
        if code is not None:
            tail = (WORK / f"{name}.log").read_text(errors="replace").splitlines()[-10:]
            last = "\n".join(f"    {line}" for line in tail) or "    (nothing)"
            raise WorkerDied(f"the {name} stopped (exit {code}); its last log lines:\n{last}")


def watch(
    workers: dict[str, subprocess.Popen[bytes]], seconds: float, until: Callable[[], bool]
) -> None:
    """Waits up to `seconds` for `until`, checking the workers each second."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not until():
        check(workers)
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    check(workers)


NODE = f"demo-node-{time.strftime('%H%M%S')}"
"""A node name per run, so the summary speaks of this run only."""
THIS_NODE = {"term": {"host.name": NODE}}


def python_traces(writer: NodeWriter) -> list[str]:
    """In a cluster the pod annotation logferry.io/multiline=python does this."""
    return [
        f"--multiline={s.namespace}/{s.pod}/{s.container}=python"
        for s in writer.specs
        if s.multiline and s.content == "python"
    ]


def count(es: Elasticsearch) -> int:
    es.indices.refresh(index="logferry-*", allow_no_indices=True)
    return es.count(index="logferry-*", allow_no_indices=True, query=THIS_NODE)["count"]


def summary(es: Elasticsearch) -> None:
    es.indices.refresh(index="logferry-*")
    per_namespace = es.search(
        index="logferry-*",
        size=0,
        query=THIS_NODE,
        aggs={"ns": {"terms": {"field": "kubernetes.namespace", "size": 20}}},
    )["aggregations"]["ns"]["buckets"]
    print("\nRecords per namespace:")
    for bucket in per_namespace:
        print(f"  {bucket['key']:<16} {bucket['doc_count']:>8}")
    errors = es.search(
        index="logferry-*",
        size=5,
        sort=[{"@timestamp": "desc"}],
        query={
            "bool": {
                "filter": [THIS_NODE],
                "must": [{"match": {"message": "error exception traceback panic fatal"}}],
            }
        },
        source=["@timestamp", "message", "kubernetes.pod.name", "kubernetes.namespace", "tags"],
    )["hits"]["hits"]
    print("\nNewest errors:")
    for hit in errors:
        doc: dict[str, Any] = hit["_source"]
        k8s = doc.get("kubernetes", {})
        first = doc["message"].splitlines()[0][:90] if doc["message"] else ""
        lines = doc["message"].count("\n") + 1
        more = f"  (+{lines - 1} lines)" if lines > 1 else ""
        print(f"  {doc['@timestamp']}  {k8s.get('namespace')}/{k8s.get('pod', {}).get('name')}")
        print(f"      {first}{more}")
    word = "timeout"
    query = {"bool": {"filter": [THIS_NODE], "must": [{"match": {"message": word}}]}}
    found = es.search(index="logferry-*", size=3, query=query)["hits"]
    print(f'\nSearch "{word}": {found["total"]["value"]} records, e.g.')
    for hit in found["hits"]:
        print(f"  {hit['_source']['message'][:100]}")


def main() -> int:
    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "node").mkdir(parents=True)
    print("demo: starting Kafka and Elasticsearch (deploy/local) ...", flush=True)
    kafka = start_service("kafka.sh", "KAFKA_BOOTSTRAP_SERVERS")
    es_url = start_service("elasticsearch.sh", "ELASTICSEARCH_URL")
    es = Elasticsearch(es_url, request_timeout=60)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "setup",
            "--elasticsearch-url",
            es_url,
            "--replicas",
            "0",
        ],
        cwd=REPO,
        check=True,
        stderr=subprocess.DEVNULL,
    )
    before = count(es)
    records: list[int] = []
    writer = NodeWriter(
        WORK / "node",
        default_node(12),
        rate=RATE,
        docker_rotation=Rotation(2 * 1024 * 1024, None, 5),
        cri_rotation=Rotation(2 * 1024 * 1024, None, 5),
        emit=lambda _record: records.append(1),
    )
    collector = spawn(
        "collector", "collector", "--sink", "kafka", "--bootstrap-servers", kafka,
        "--docker-root", str(WORK / "node" / "docker"), "--log-root", str(WORK / "node" / "log"),
        "--state-dir", str(WORK / "state"), "--kubernetes", "off", "--node-name", NODE,
        "--metrics-port", "0", *writer.multiline_flags(), *python_traces(writer),
    )  # fmt: skip
    pipeline = spawn(
        "pipeline", "pipeline", "run", "--bootstrap-servers", kafka,
        "--elasticsearch-url", es_url, "--metrics-port", "0",
    )  # fmt: skip
    workers = {"collector": collector, "pipeline": pipeline}
    print(f"demo: writing a node's logs at {RATE:.0f} lines/s for {SECONDS:.0f} s", flush=True)
    writer.start(duration=SECONDS)
    started = time.monotonic()
    try:
        while writer.thread is not None and writer.thread.is_alive():
            watch(workers, 3, lambda: not (writer.thread and writer.thread.is_alive()))
            print(
                f"  {time.monotonic() - started:5.0f} s  lines written {writer.lines_written:>7}"
                f"  rotations {writer.rotations():>3}  searchable {count(es) - before:>7}",
                flush=True,
            )
        writer.join()
        settled, last = time.monotonic(), -1
        while time.monotonic() - settled < 5:
            now = count(es)
            if now != last:
                settled, last = time.monotonic(), now
            watch(workers, 0.5, lambda: False)
        print(
            f"demo: {writer.lines_written} lines written, making {len(records)} records "
            f"(16 KiB pieces and stack traces joined); {last - before} searchable"
        )
    except WorkerDied as exc:
        print(f"demo: {exc}", file=sys.stderr)
        print(f"demo: logs of the run in {WORK}; {SERVERS_HINT}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ndemo: interrupted; the collector and pipeline are stopped. {SERVERS_HINT}")
        return 130
    finally:
        writer.close()
        stop(workers)
    summary(es)
    if last - before != len(records):
        print(f"\ndemo: WARNING: {len(records)} records written but {last - before} searchable")
    print(f"\nKAFKA_BOOTSTRAP_SERVERS={kafka}\nELASTICSEARCH_URL={es_url}")
    print(f"Logs of the run: {WORK}/collector.log, {WORK}/pipeline.log")
    print(SERVERS_HINT)
    return 0 if last - before == len(records) else 1


def stop(workers: dict[str, subprocess.Popen[bytes]]) -> None:
    for process in workers.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in workers.values():
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(f"\ndemo: interrupted. {SERVERS_HINT}")
