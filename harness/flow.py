"""The whole flow with real processes, and the exactly-once check that ends every e2e test.

node writer (harness/nodewriter.py, a thread here) -> files -> `python -m collector` (a
subprocess, own state dir, pod metadata from the stand-in Kubernetes API of harness/k8s_api.py)
-> the real Kafka -> `python -m pipeline run` processes (one consumer group) -> the real
Elasticsearch. `Flow.check()` then compares what Elasticsearch holds with the writer's ground
truth: every record exactly once by `event.id` (no `_id` twice across the indices) and by
content (the multiset of (container, stream, message) equals the ground truth), stack traces
joined, and the metadata the stand-in API serves on every document.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from elasticsearch import Elasticsearch, helpers

from harness.collector_run import new_topic, start_collector
from harness.k8s_api import KubeAPI, namespace, pod
from harness.nodewriter import NodeWriter, Rotation, Spec, Truth
from harness.pipeline_run import start_pipeline

NODE = "node-a"
NAMESPACE_LABELS = {
    "shop": {"team": "checkout", "cost-center": "cc-17"},
    "payments": {"team": "payments", "pci": "true"},
    "web": {"team": "frontend"},
}
SOURCE = [
    "message",
    "event.original",
    "stream",
    "tags",
    "event.id",
    "kubernetes",
    "container",
    "host",
]


@dataclass
class Expected:
    """What the documents of one container must carry, from the stand-in's pod."""

    labels: dict[str, str]
    namespace_labels: dict[str, str]
    deployment: str | None
    container_id: str
    image: str
    runtime: str
    pod_uid: str


@dataclass
class Outcome:
    name: str
    written: int = 0
    found: int = 0
    lost: int = 0
    doubled: int = 0
    duplicate_ids: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.name}: written {self.written}, found {self.found}, lost {self.lost}, "
            f"doubled {self.doubled} (ids twice: {self.duplicate_ids}), {self.seconds:.0f} s"
        )


COLLECTOR_FLAGS = "LOGFERRY_E2E_COLLECTOR_FLAGS"
"""Flags every flow's collector gets besides its test's own, e.g. `--inotify false`: a
scenario run again under other settings without editing it."""

RESULTS: list[Outcome] = []
"""Every check's outcome, printed at the end of the session (tests/e2e/conftest.py)."""


def pods_for(specs: list[Spec]) -> tuple[list[dict[str, Any]], dict[str, Expected]]:
    """The stand-in's Pod objects for the writer's containers, and what records must carry."""
    by_pod: dict[tuple[str, str], list[Spec]] = {}
    for s in specs:
        by_pod.setdefault((s.namespace, s.pod), []).append(s)
    pods = []
    expected: dict[str, Expected] = {}
    for (ns, name), members in by_pod.items():
        first = members[0]
        runtime = "docker" if first.runtime == "docker" else "containerd"
        owner = ("ReplicaSet", name.rsplit("-", 1)[0]) if first.deployment else None
        obj = pod(
            name,
            ns,
            node=NODE,
            uid=first.uid,
            labels=first.labels,
            annotations=first.annotations,
            containers=[s.container for s in members],
            image=first.image,
            owner=owner,
            runtime=runtime,
        )
        for s, container, status in zip(
            members,
            obj["spec"]["containers"],
            obj["status"]["containerStatuses"],
            strict=True,
        ):
            container["image"] = s.image
            status["image"] = s.image
            assert status["containerID"] == f"{runtime}://{s.cid}"
            expected[s.key] = Expected(
                labels=dict(obj["metadata"]["labels"]),
                namespace_labels={"kubernetes.io/metadata.name": ns, **NAMESPACE_LABELS[ns]},
                deployment=first.deployment,
                container_id=s.cid,
                image=s.image,
                runtime=runtime,
                pod_uid=first.uid,
            )
        pods.append(obj)
    return pods, expected


class Flow:
    """One run of the whole flow in `tmp`; `check()` ends it."""

    def __init__(
        self,
        name: str,
        tmp: Path,
        bootstrap: str,
        es_url: str,
        es: Elasticsearch,
        prefix: str,
        specs: list[Spec],
        *,
        rate: float,
        docker_rotation: Rotation | None = None,
        cri_rotation: Rotation | None = None,
        seed: int = 0,
        partitions: int = 6,
        replication: int = 1,
        collector_flags: tuple[str, ...] = (),
        pipeline_flags: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.tmp = tmp
        self.bootstrap = bootstrap
        self.es_url = es_url
        self.es = es
        self.prefix = prefix
        self.started = time.monotonic()
        self.topic = new_topic(bootstrap, partitions, replication)
        self.api = KubeAPI(bookmark_every=1.0)
        for ns, labels in NAMESPACE_LABELS.items():
            self.api.add(namespace(ns, labels=labels))
        self.pods, self.expected = pods_for(specs)
        for obj in self.pods:
            self.api.add(obj)
        self.api.up()
        self.kubeconfig = self.api.kubeconfig(tmp / "kubeconfig")
        self.writer = NodeWriter(
            tmp,
            specs,
            rate=rate,
            docker_rotation=docker_rotation,
            cri_rotation=cri_rotation,
            truth=tmp / "truth.jsonl",
            seed=seed,
        )
        self.specs = {s.key: s for s in specs}
        self.collector_flags = (
            *shlex.split(os.environ.get(COLLECTOR_FLAGS, "")),
            *collector_flags,
        )
        self.pipeline_flags = pipeline_flags
        self.collector: subprocess.Popen[bytes] | None = None
        self.starts = 0
        """Collector processes started so far (each logs `collector started` once)."""
        self.pipelines: list[subprocess.Popen[bytes]] = []
        self.dead: list[subprocess.Popen[bytes]] = []
        """Processes this test killed on purpose."""

    # --- processes -------------------------------------------------------------------------

    def start_collector(self, *extra: str) -> subprocess.Popen[bytes]:
        assert self.collector is None or self.collector.poll() is not None
        self.collector = start_collector(
            self.tmp,
            self.bootstrap,
            self.topic,
            "--kubernetes",
            "on",
            "--kubeconfig",
            self.kubeconfig,
            "--node-name",
            NODE,
            *self.writer.multiline_flags(),
            *self.collector_flags,
            *extra,
        )
        self.starts += 1
        return self.collector

    def wait_collector_started(self, timeout: float = 60) -> None:
        """Until the newest collector has its first pod and namespace lists: containers
        start writing on a node whose agent runs (kubelet rotates unread files away), and
        a fault injected before that would only find it waiting."""
        log = self.tmp / "collector.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace") if log.exists() else ""
            # Records wait for the API's first answer: a kill before it tests nothing.
            if text.count('"kubernetes API answered') >= self.starts:
                time.sleep(0.5)
                return
            assert self.collector is not None
            assert self.collector.poll() is None, f"the collector exited:\n{text[-2000:]}"
            time.sleep(0.1)
        raise AssertionError(f"the collector did not start in {timeout} s")

    def kill_collector(self, sig: int = signal.SIGKILL, timeout: float = 60) -> int:
        assert self.collector is not None
        self.collector.send_signal(sig)
        code = self.collector.wait(timeout)
        self.dead.append(self.collector)
        return code

    def start_pipeline(self, *extra: str) -> subprocess.Popen[bytes]:
        process = start_pipeline(
            self.tmp,
            self.bootstrap,
            self.es_url,
            self.topic,
            self.prefix,
            *self.pipeline_flags,
            *extra,
        )
        self.pipelines.append(process)
        return process

    def kill_pipeline(self, process: subprocess.Popen[bytes]) -> None:
        process.kill()
        process.wait(30)
        self.pipelines.remove(process)
        self.dead.append(process)

    def start(self, pipelines: int = 2, duration: float | None = None) -> Flow:
        """Collector and pipelines up, then the writer (for `duration` s, if given)."""
        self.start_collector()
        for _ in range(pipelines):
            self.start_pipeline()
        self.wait_collector_started()
        if duration is not None:
            self.writer.start(duration=duration)
        return self

    def stop(self) -> None:
        """Stop everything that still runs; never raises."""
        with contextlib.suppress(Exception):
            self.writer.stopping.set()
            if self.writer.thread is not None:
                self.writer.thread.join(30)
        self.writer.close()
        for process in [self.collector, *self.pipelines]:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in [self.collector, *self.pipelines]:
            if process is None:
                continue
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.api.down()
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        with contextlib.suppress(Exception):
            for future in admin.delete_topics([self.topic, f"{self.topic}.dlq"]).values():
                with contextlib.suppress(Exception):
                    future.result(10)

    # --- the end ---------------------------------------------------------------------------

    def count(self) -> int:
        self.es.indices.refresh(index=f"{self.prefix}-*", allow_no_indices=True)
        return int(self.es.count(index=f"{self.prefix}-*", allow_no_indices=True)["count"])

    def settle(self, expected: int, timeout: float, quiet: float = 3.0, stall: float = 75.0) -> int:
        """Wait until Elasticsearch holds `expected` documents and nothing more comes, or
        nothing came for `stall` s (longer than a consumer group's session timeout)."""
        deadline = time.monotonic() + timeout
        seen, changed = -1, time.monotonic()
        while time.monotonic() < deadline:
            n = self.count()
            if n != seen:
                seen, changed = n, time.monotonic()
            calm = time.monotonic() - changed
            if (n >= expected and calm >= quiet) or calm >= stall:
                break
            time.sleep(0.5)
        return seen

    def documents(self) -> Iterator[dict[str, Any]]:
        self.es.indices.refresh(index=f"{self.prefix}-*", allow_no_indices=True)
        yield from helpers.scan(
            self.es,
            index=f"{self.prefix}-*",
            query={"query": {"match_all": {}}, "_source": SOURCE},
            size=1000,
            request_timeout=120,
        )

    def dead_letters(self) -> int:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        dlq = f"{self.topic}.dlq"
        topics = admin.list_topics(timeout=15).topics
        if dlq not in topics:
            return 0
        from confluent_kafka import Consumer

        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "dlq-count"})
        try:
            total = 0
            for p in topics[dlq].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(dlq, p), timeout=15)
                total += high - low
            return total
        finally:
            consumer.close()

    def processes_alive(self) -> list[str]:
        problems = []
        if self.collector is not None and self.collector.poll() is not None:
            problems.append(f"the collector exited with {self.collector.returncode}")
        for p in self.pipelines:
            if p.poll() is not None:
                problems.append(f"a pipeline exited with {p.returncode}")
        return problems

    def check(self, timeout: float = 240.0) -> Outcome:
        """Writer done, everything through: compare Elasticsearch with the ground truth."""
        self.writer.join()
        truth: list[Truth] = self.writer.records
        outcome = Outcome(self.name, written=len(truth))
        outcome.problems += self.processes_alive()
        self.settle(len(truth), timeout)
        outcome.problems += self.processes_alive()
        want = Counter((r.container, r.stream, r.message) for r in truth)
        found: Counter[tuple[str, str, str]] = Counter()
        ids: Counter[str] = Counter()
        tags: Counter[str] = Counter()
        metadata: Counter[str] = Counter()
        multiline_docs = 0
        examples: dict[str, str] = {}
        for hit in self.documents():
            doc = hit["_source"]
            ids[hit["_id"]] += 1
            k8s = doc.get("kubernetes") or {}
            key = "/".join(
                (
                    str(k8s.get("namespace")),
                    str((k8s.get("pod") or {}).get("name")),
                    str((k8s.get("container") or {}).get("name")),
                )
            )
            # The text as written: the message, unless one was taken from a parsed field.
            text = (doc.get("event") or {}).get("original", doc.get("message"))
            found[(key, doc.get("stream"), text)] += 1
            doc_tags = doc.get("tags") or []
            for tag in doc_tags:
                tags[tag] += 1
            if "multiline" in doc_tags:
                multiline_docs += 1
            if (doc.get("event") or {}).get("id") != hit["_id"]:
                metadata["event.id differs from _id"] += 1
            for problem in self.metadata_problems(key, doc):
                metadata[problem] += 1
                examples.setdefault(problem, f"{key}: {str(doc)[:300]}")
        outcome.found = sum(found.values())
        lost = want - found
        doubled = found - want
        outcome.lost = sum(lost.values())
        outcome.doubled = sum(doubled.values())
        outcome.duplicate_ids = sum(n - 1 for n in ids.values() if n > 1)
        outcome.seconds = time.monotonic() - self.started
        if lost:
            outcome.problems.append(
                f"{outcome.lost} records lost, by container: "
                f"{dict(Counter(k[0] for k in lost.elements()))}; first: "
                + "; ".join(repr(k)[:300] for k in list(lost)[:3])
            )
        if doubled:
            outcome.problems.append(
                f"{outcome.doubled} records doubled or changed, by container: "
                f"{dict(Counter(k[0] for k in doubled.elements()))}; first: "
                + "; ".join(repr(k)[:300] for k in list(doubled)[:3])
            )
        if outcome.duplicate_ids:
            outcome.problems.append(f"{outcome.duplicate_ids} _id found more than once")
        bad_tags = {t: n for t, n in tags.items() if t != "multiline"}
        if bad_tags:
            outcome.problems.append(f"unexpected tags: {bad_tags}")
        traces = sum(1 for r in truth if self.specs[r.container].multiline and "\n" in r.message)
        if multiline_docs != traces:
            outcome.problems.append(
                f"{multiline_docs} documents tagged multiline, {traces} stack traces written"
            )
        for problem, n in metadata.items():
            outcome.problems.append(f"{n} documents: {problem} (e.g. {examples.get(problem)})")
        dlq = self.dead_letters()
        if dlq:
            outcome.problems.append(f"{dlq} records in the dead-letter topic")
        RESULTS.append(outcome)
        return outcome

    def metadata_problems(self, key: str, doc: dict[str, Any]) -> Iterator[str]:
        want = self.expected.get(key)
        if want is None:
            yield "unknown container"
            return
        k8s = doc.get("kubernetes") or {}
        container = doc.get("container") or {}
        if k8s.get("labels") != want.labels:
            yield "kubernetes.labels"
        if k8s.get("namespace_labels") != want.namespace_labels:
            yield "kubernetes.namespace_labels"
        if (k8s.get("deployment") or {}).get("name") != want.deployment:
            yield "kubernetes.deployment.name"
        if (k8s.get("pod") or {}).get("uid") != want.pod_uid:
            yield "kubernetes.pod.uid"
        if k8s.get("node", {}).get("name") != NODE:
            yield "kubernetes.node.name"
        if container.get("id") != want.container_id:
            yield "container.id"
        if (container.get("image") or {}).get("name") != want.image:
            yield "container.image.name"
        if container.get("runtime") != want.runtime:
            yield "container.runtime"
        if (doc.get("host") or {}).get("name") != NODE:
            yield "host.name"

    def logs(self, lines: int = 15) -> str:
        """The last lines of every process's stderr, for failure messages."""
        out = []
        for path in sorted(self.tmp.glob("*.log")):
            text = [
                line
                for line in path.read_text(errors="replace").splitlines()
                if '"logger":"elastic_transport' not in line
            ]
            out.append(f"--- {path.name} ({len(text)} lines besides each bulk request)")
            out += [t[:400] for t in text[-lines:]]
        return "\n".join(out)

    def assert_exactly_once(self, outcome: Outcome) -> None:
        assert not outcome.problems, (
            outcome.line() + "\n" + "\n".join(outcome.problems) + "\n" + self.logs()
        )
