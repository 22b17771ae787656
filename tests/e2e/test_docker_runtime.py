"""Logs written by a real Docker engine, read by the real collector: the runtime is the truth.

The node writer of the other end-to-end tests writes files the way we understand the runtimes;
here real containers on the Debian base image (deploy/local/docker.sh) print known records
through dockerd's json-file driver, with `max-size`/`max-file` rotation, while the collector
follows the engine's own data root. Each container's program also writes what it printed to a
truth file (tests/e2e/container_workload.py), and every record must arrive exactly once with
the container's real name and image and the Kubernetes labels of its config.v2.json.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import runtime_logs
from tests.e2e.runtime_logs import ENV, REPO, Ran, run_workload
from tests.servers import Engine

pytestmark = pytest.mark.e2e

ROTATED = re.compile(r"-json\.log\.\d+$")


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
        runtime_logs.assert_same(want.name, got, runtime_logs.truth(want.truth))


def test_every_record_a_real_engine_wrote_arrives_once_with_its_container_names(
    tmp_path: Path, docker_engine: Engine, base_image: str
) -> None:
    client = docker_engine.client()
    root = docker_engine.data_root / "containers"
    namespace = f"rt{uuid.uuid4().hex[:8]}"
    out = tmp_path / "followed.jsonl"
    log = tmp_path / "collector.log"
    command = runtime_logs.collector(tmp_path, out, namespace, root, tmp_path / "no-log-root")
    with open(log, "ab") as stderr:
        follower = subprocess.Popen(command, cwd=REPO, env=ENV, stderr=stderr)
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

        def keep(record: dict[str, Any]) -> bool:
            """Ours: the engine may hold other tests' containers."""
            return record.get("container", {}).get("id") in ids

        expected = sum(sum(runtime_logs.truth(r.truth).values()) for r in ran)
        check(runtime_logs.follow_to_the_end(follower, out, keep, expected, log), ran)

        # The same files read afresh once the containers are quiet: rotated files too.
        again = tmp_path / "once.jsonl"
        runtime_logs.once(
            runtime_logs.collector(tmp_path, again, namespace, root, tmp_path / "no-log-root"),
            log,
        )
        check(runtime_logs.records(again, keep), ran)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
        for started in containers:
            started.remove(force=True)
        client.close()
