"""CRI-format logs written by a real runtime: podman's k8s-file driver (conmon, as CRI-O).

Containers on the Debian base print the known records of tests/e2e/container_workload.py;
conmon writes them where a kubelet would have them written, `pods/<ns>_<pod>_<uid>/<name>/0.log`
(the kubelet makes the folder: conmon does not), in the CRI format: RFC 3339 times with an
offset, and lines over 8 KiB cut into `P` pieces. The collector follows that log root; every
record must arrive exactly once, with the namespace, pod, uid and container of its path.
"""

from __future__ import annotations

import subprocess
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import runtime_logs
from tests.e2e.runtime_logs import ENV, REPO, WORKLOAD
from tests.servers import podman

pytestmark = pytest.mark.e2e


def test_every_record_conmon_wrote_in_cri_format_arrives_once_with_its_pod(
    tmp_path: Path, podman_base_image: str
) -> None:
    namespace = f"cri{uuid.uuid4().hex[:8]}"
    pod, uid = "web-5c8d", str(uuid.uuid4())
    log_root = tmp_path / "log"
    truth_dir = tmp_path / "truth"
    truth_dir.mkdir()
    out = tmp_path / "followed.jsonl"
    log = tmp_path / "collector.log"
    command = runtime_logs.collector(tmp_path, out, namespace, tmp_path / "no-docker", log_root)
    with open(log, "ab") as stderr:
        follower = subprocess.Popen(command, cwd=REPO, env=ENV, stderr=stderr)
    names: list[str] = []
    plan = {"app": 400, "sidecar": 10}
    try:
        for container, lines in plan.items():
            folder = log_root / "pods" / f"{namespace}_{pod}_{uid}" / container
            folder.mkdir(parents=True)
            name = f"{namespace}-{container}"
            podman(
                "run",
                "--detach",
                "--name",
                name,
                "--network",
                "none",
                "--log-driver",
                "k8s-file",
                "--log-opt",
                f"path={folder / '0.log'}",
                "--volume",
                f"{WORKLOAD}:/workload.py:ro",
                "--volume",
                f"{truth_dir}:/truth",
                podman_base_image,
                "python3",
                "/workload.py",
                f"/truth/{container}.jsonl",
                str(lines),
            )
            names.append(name)
        for name in names:
            assert podman("wait", name, timeout=180).strip() == "0"

        def keep(record: dict[str, Any]) -> bool:
            return record.get("kubernetes", {}).get("namespace") == namespace

        want = {c: runtime_logs.truth(truth_dir / f"{c}.jsonl") for c in plan}
        expected = sum(sum(w.values()) for w in want.values())

        def check(records: list[dict[str, Any]]) -> None:
            for record in records:
                k8s = record["kubernetes"]
                assert k8s["pod"]["name"] == pod
                assert k8s["pod"]["uid"] == uid
                assert k8s["container"]["name"] in plan
                assert "parse_error" not in record.get("tags", [])
            for container, wanted in want.items():
                got = Counter(
                    (r["stream"], r["message"])
                    for r in records
                    if r["kubernetes"]["container"]["name"] == container
                )
                runtime_logs.assert_same(container, got, wanted)

        check(runtime_logs.follow_to_the_end(follower, out, keep, expected, log))
        again = tmp_path / "once.jsonl"
        runtime_logs.once(
            runtime_logs.collector(tmp_path, again, namespace, tmp_path / "no-docker", log_root),
            log,
        )
        check(runtime_logs.records(again, keep))
        first = (log_root / "pods" / f"{namespace}_{pod}_{uid}" / "app" / "0.log").read_bytes()
        assert b" stdout P " in first, "conmon cuts the 40 KB line into partial pieces"
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
        for name in names:
            podman("rm", "--force", name)
