"""deploy/kubernetes on the real API server (deploy/local/kube.sh): RBAC enforced by the
server, and every kustomization accepted by a server-side dry run.

The collector runs as a process (`python -m collector --once`) with nothing but the
logferry-collector ServiceAccount's token, as its DaemonSet pod would: every record is fully
enriched and the server refused none of its requests, while what the role leaves out (secrets,
workloads, writes) is refused to the same token.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from harness import kube_cluster as kc
from tests.servers import Cluster
from tests.unit.logfiles import append, cri_line

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = sorted((REPO / "deploy/kubernetes/overlays").glob("*/kustomization.yaml"))
KUSTOMIZATIONS = [
    "deploy/kubernetes",
    "deploy/kubernetes/base",
    *(str(p.parent.relative_to(REPO)) for p in OVERLAYS),
]
"""Every kustomization that applies to a bare cluster. deploy/kubernetes/monitoring is left
out: its kinds (PodMonitor, PrometheusRule) are the Prometheus Operator's CRDs, which a cluster
only has with the operator; tests/unit/test_manifests.py checks them with the operator's types."""


def refused(call: Callable[[], object]) -> int:
    """The HTTP status the server answered `call` with."""
    try:
        call()
    except ApiException as exc:
        return int(exc.status)
    return 200


def test_the_collector_role_is_enough_and_no_more(cluster: Cluster, tmp_path: Path) -> None:
    as_collector = config.new_client_from_config(config_file=str(cluster.collector_kubeconfig))
    core, apps = client.CoreV1Api(as_collector), client.AppsV1Api(as_collector)
    node, ns = kc.unique("node"), kc.unique("web")
    kc.create_namespace(cluster.core, ns, {"team": "web"})

    # Outside the role: refused by the server.
    assert refused(lambda: core.list_namespaced_secret(ns)) == 403
    assert refused(lambda: apps.list_namespaced_replica_set(ns)) == 403
    assert refused(lambda: core.create_namespaced_pod(ns, kc.pod_manifest("x", node))) == 403
    assert refused(lambda: core.patch_namespace(ns, {"metadata": {"labels": {"a": "b"}}})) == 403
    # Inside it: allowed.
    assert refused(lambda: core.list_namespace(limit=1)) == 200
    as_collector.close()

    pods = [
        kc.create_pod(
            cluster.core,
            ns,
            kc.pod_manifest(
                f"front-{i}",
                node,
                labels={"app": "front", "pod-template-hash": "7c5d4f9b8d"},
                owners=[
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "name": "front-7c5d4f9b8d",
                        "uid": "00000000-0000-0000-0000-00000000000f",
                        "controller": True,
                    }
                ],
                containers=("app", "sidecar"),
            ),
        )
        for i in range(3)
    ]
    lines = 0
    for pod in pods:
        meta = pod["metadata"]
        for container in ("app", "sidecar"):
            folder = tmp_path / "log" / "pods" / f"{ns}_{meta['name']}_{meta['uid']}" / container
            folder.mkdir(parents=True)
            append(folder / "0.log", *(cri_line(f"{container} line {n}") for n in range(5)))
            lines += 5

    audit = kc.AuditLog(cluster.kube.audit_log)
    out = tmp_path / "records.ndjson"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "KUBECONFIG": str(cluster.collector_kubeconfig),
        "NODE_NAME": node,
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "collector",
            "--once",
            "--sink",
            f"file:{out}",
            "--docker-root",
            str(tmp_path / "docker"),
            "--log-root",
            str(tmp_path / "log"),
            "--state-dir",
            str(tmp_path / "state"),
            "--metrics-port",
            "0",
            # Bounds the wait for the first list, which a busy machine can make slow.
            "--metadata-wait",
            "120",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == lines
    for record in records:
        k8s = record["kubernetes"]
        assert "tags" not in record, record
        assert k8s["labels"]["app"] == "front"
        assert k8s["namespace_labels"]["team"] == "web"
        assert k8s["deployment"] == {"name": "front"}
        assert k8s["node"]["name"] == node
        assert record["container"]["id"] == kc.container_id(
            k8s["pod"]["uid"], k8s["container"]["name"]
        )
    events = audit.events(kc.COLLECTOR_USER)
    assert events, "the collector's requests are in the audit log"
    assert [e for e in events if e["responseStatus"]["code"] >= 400] == []


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_kustomization_is_accepted_by_the_server(cluster: Cluster, path: str) -> None:
    """`kubectl apply --dry-run=server -k`: the API server's own validation, defaulting and
    admission of every object (the `logging` namespace exists: dry runs create nothing)."""
    done = subprocess.run(
        [
            cluster.kube.kubectl,
            "--kubeconfig",
            cluster.kube.kubeconfig,
            "apply",
            "--dry-run=server",
            "-k",
            REPO / path,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "daemonset.apps/logferry-collector" in done.stdout
