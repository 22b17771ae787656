"""Logs written by a real Docker engine, read by the real collector: the runtime is the truth.

The node writer of the other end-to-end tests writes files the way we understand the runtimes;
here real containers on the Debian base image (deploy/local/docker.sh) print known records
through dockerd's json-file driver, with `max-size`/`max-file` rotation, while the collector
follows the engine's own data root. Each container's program also writes what it printed to a
truth file (tests/e2e/container_workload.py), and every record must arrive exactly once with
the container's real name and image and the Kubernetes labels of its config.v2.json.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.servers import Engine

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
WORKLOAD = Path(__file__).with_name("container_workload.py")
ROTATED = re.compile(r"-json\.log\.\d+$")


@dataclass(frozen=True)
class Ran:
    """A container that ran the workload, and what its config.v2.json should tell."""

    id: str
    name: str
    image: str
    namespace: str
    pod: str
    container: str
    truth: Path

    def expected(self) -> Counter[tuple[str, str]]:
        lines = self.truth.read_text(encoding="utf-8").splitlines()
        return Counter((r["stream"], r["message"]) for r in map(json.loads, lines))


def run_workload(
    client: Any,
    image: str,
    tmp: Path,
    namespace: str,
    pod: str,
    container: str,
    lines: int,
    log_options: dict[str, str],
) -> tuple[Any, Ran]:
    import docker

    truth_dir = tmp / "truth"
    truth_dir.mkdir(exist_ok=True)
    name = f"{namespace}-{pod}-{container}"
    started = client.containers.run(
        image,
        ["python3", "/workload.py", f"/truth/{name}.jsonl", str(lines)],
        name=name,
        detach=True,
        network_mode="none",
        labels={
            "io.kubernetes.pod.namespace": namespace,
            "io.kubernetes.pod.name": pod,
            "io.kubernetes.container.name": container,
            "org.example.team": "logs <>&",
        },
        volumes={
            str(WORKLOAD): {"bind": "/workload.py", "mode": "ro"},
            str(truth_dir): {"bind": "/truth", "mode": "rw"},
        },
        log_config=docker.types.LogConfig(type="json-file", config=log_options),
    )
    return started, Ran(
        started.id, name, image, namespace, pod, container, truth_dir / f"{name}.jsonl"
    )


def collector(tmp: Path, docker_root: Path, out: Path, namespace: str, *flags: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "collector",
        "--docker-root",
        str(docker_root),
        "--log-root",
        str(tmp / "no-log-root"),
        "--state-dir",
        str(tmp / f"state-{out.stem}"),
        "--sink",
        f"file:{out}",
        "--kubernetes",
        "off",
        "--metrics-port",
        "0",
        "--scan-interval",
        "0.2",
        "--multiline",
        f"{namespace}/*/*=python",
        *flags,
    ]


def ours(out: Path, ids: set[str]) -> list[dict[str, Any]]:
    """The records of these containers (the engine may hold other tests' containers)."""
    if not out.exists():
        return []
    records = [orjson.loads(line) for line in out.read_bytes().splitlines() if line.endswith(b"}")]
    return [r for r in records if r.get("container", {}).get("id") in ids]


def check(records: list[dict[str, Any]], ran: list[Ran]) -> None:
    by_id = {r.id: r for r in ran}
    for record in records:
        want = by_id[record["container"]["id"]]
        assert record["container"]["name"] == want.name
        assert record["container"]["image"]["name"] == want.image
        assert record["container"]["runtime"] == "docker"
        assert record["kubernetes"]["namespace"] == want.namespace
        assert record["kubernetes"]["pod"]["name"] == want.pod
        assert record["kubernetes"]["container"]["name"] == want.container
        assert "parse_error" not in record.get("tags", [])
    for want in ran:
        got = Counter(
            (r["stream"], r["message"]) for r in records if r["container"]["id"] == want.id
        )
        expected = want.expected()
        lost, extra = expected - got, got - expected
        differences = lost + extra
        assert not differences, (
            f"{want.name}: {sum(lost.values())} lost, {sum(extra.values())} extra; "
            f"first lost: {[repr(k)[:300] for k in list(lost)[:3]]}; "
            f"first extra: {[repr(k)[:300] for k in list(extra)[:3]]}"
        )


def test_every_record_a_real_engine_wrote_arrives_once_with_its_container_names(
    tmp_path: Path, docker_engine: Engine, base_image: str
) -> None:
    client = docker_engine.client()
    root = docker_engine.data_root / "containers"
    namespace = f"rt{uuid.uuid4().hex[:8]}"
    out = tmp_path / "followed.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = open(tmp_path / "collector.log", "ab")  # noqa: SIM115 -- closed in finally
    follower = subprocess.Popen(
        collector(tmp_path, root, out, namespace), cwd=REPO, env=env, stderr=log
    )
    containers: list[Any] = []
    try:
        app, app_ran = run_workload(
            client,
            base_image,
            tmp_path,
            namespace,
            "web-7d9f",
            "app",
            3000,
            {"max-size": "64k", "max-file": "20"},
        )
        containers.append(app)
        sidecar, sidecar_ran = run_workload(
            client, base_image, tmp_path, namespace, "web-7d9f", "sidecar", 20, {}
        )
        containers.append(sidecar)
        ran = [app_ran, sidecar_ran]
        for started in containers:
            assert started.wait(timeout=120)["StatusCode"] == 0, started.logs()[-2000:]
        rotated = [p for p in (root / app.id).iterdir() if ROTATED.search(p.name)]
        assert len(rotated) >= 3, "max-size 64k should have rotated the app's log several times"

        ids = {r.id for r in ran}
        expected = sum(sum(r.expected().values()) for r in ran)
        deadline = time.monotonic() + 180
        while len(ours(out, ids)) < expected and time.monotonic() < deadline:
            assert follower.poll() is None, (tmp_path / "collector.log").read_text()[-3000:]
            time.sleep(0.2)
        follower.send_signal(signal.SIGTERM)
        assert follower.wait(60) == 0
        check(ours(out, ids), ran)

        # The same files read afresh once the containers are gone quiet: rotated files too.
        again = tmp_path / "once.jsonl"
        done = subprocess.run(
            [*collector(tmp_path, root, again, namespace), "--once"],
            cwd=REPO,
            env=env,
            stderr=log,
            timeout=300,
        )
        assert done.returncode == 0
        check(ours(again, ids), ran)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
        log.close()
        for started in containers:
            started.remove(force=True)
        client.close()
