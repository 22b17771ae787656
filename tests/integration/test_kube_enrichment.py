"""Pod metadata from the real Kubernetes API server (deploy/local/kube.sh: etcd +
kube-apiserver with RBAC, admission and its watch cache), watched with the collector's own
ServiceAccount under deploy/kubernetes/base/rbac.yaml.

There is no scheduler, kubelet or controller-manager: harness/kube_cluster.py creates pods
already bound to a node, reports their containers through the status subresource as a kubelet
does, and makes each namespace's `default` ServiceAccount. Each test watches a node of its own.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from prometheus_client import REGISTRY

from collector.enrich import Enricher, PodInfo
from harness import kube_cluster as kc
from harness.wait import until
from tests.servers import Cluster

WAIT = kc.WAIT


def watcher(cluster: Cluster, node: str, *, grace: float = 600.0) -> Enricher:
    enricher = Enricher(
        node, grace=grace, kubeconfig=str(cluster.collector_kubeconfig), backoff_max=1.0
    )
    enricher.start()
    until(lambda: enricher.synced, WAIT, "first list of pods and namespaces")
    return enricher


@pytest.fixture
def enrichers() -> Iterator[list[Enricher]]:
    made: list[Enricher] = []
    yield made
    for enricher in made:
        enricher.stop()


def by_id(enricher: Enricher, pod: dict[str, Any], container: str = "app") -> PodInfo | None:
    cid = kc.container_id(pod["metadata"]["uid"], container)
    return enricher.lookup({"container.id": cid})


def known(enricher: Enricher, pod: dict[str, Any], container: str = "app") -> PodInfo:
    return until(
        lambda: by_id(enricher, pod, container),
        WAIT,
        f"pod {pod['metadata']['name']} in the collector's cache",
    )


def counter(name: str, resource: str) -> float:
    return REGISTRY.get_sample_value(f"{name}_total", {"resource": resource}) or 0.0


def test_pods_of_replicasets_and_statefulsets_carry_labels_owners_and_namespace_labels(
    cluster: Cluster, enrichers: list[Enricher]
) -> None:
    node, ns = kc.unique("node"), kc.unique("shop")
    kc.create_namespace(cluster.core, ns, {"team": "checkout", "app.kubernetes.io/part-of": "shop"})
    template = {"metadata": {"labels": {"app": "cart"}}, "spec": {"containers": []}}
    template["spec"]["containers"] = [{"name": "app", "image": "registry.local/app:1.0"}]
    hash_ = "6f9b7c5d48"
    replicaset = cluster.apps.create_namespaced_replica_set(
        ns,
        {
            "metadata": {"name": f"cart-{hash_}", "labels": {"pod-template-hash": hash_}},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "cart", "pod-template-hash": hash_}},
                "template": {
                    "metadata": {"labels": {"app": "cart", "pod-template-hash": hash_}},
                    "spec": template["spec"],
                },
            },
        },
    )
    statefulset = cluster.apps.create_namespaced_stateful_set(
        ns,
        {
            "metadata": {"name": "db"},
            "spec": {
                "serviceName": "db",
                "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}}, "spec": template["spec"]},
            },
        },
    )
    enricher = watcher(cluster, node)
    enrichers.append(enricher)
    cart = kc.create_pod(
        cluster.core,
        ns,
        kc.pod_manifest(
            f"cart-{hash_}-x2x7k",
            node,
            labels={"app": "cart", "pod-template-hash": hash_, "app.kubernetes.io/name": "cart"},
            owners=[kc.owner("ReplicaSet", replicaset)],
        ),
    )
    db = kc.create_pod(
        cluster.core,
        ns,
        kc.pod_manifest(
            "db-0",
            node,
            labels={"app": "db", "statefulset.kubernetes.io/pod-name": "db-0"},
            owners=[kc.owner("StatefulSet", statefulset)],
            containers=("db", "metrics"),
        ),
    )
    elsewhere = kc.create_pod(cluster.core, ns, kc.pod_manifest("elsewhere", kc.unique("node")))

    info = known(enricher, cart).fields
    assert info["kubernetes.pod.name"] == f"cart-{hash_}-x2x7k"
    assert info["kubernetes.pod.uid"] == cart["metadata"]["uid"]
    assert info["kubernetes.node.name"] == node
    assert info["kubernetes.labels"]["app.kubernetes.io/name"] == "cart"
    assert info["kubernetes.replicaset.name"] == f"cart-{hash_}"
    assert info["kubernetes.deployment.name"] == "cart"
    assert info["kubernetes.namespace_labels"] == {
        "team": "checkout",
        "app.kubernetes.io/part-of": "shop",
        "kubernetes.io/metadata.name": ns,  # set by the API server itself
    }
    assert info["container.runtime"] == "containerd"
    assert info["container.image.name"] == "registry.local/app:1.0"
    assert info["kubernetes.pod.ip"].startswith("10.")

    metrics = known(enricher, db, "metrics").fields
    assert metrics["kubernetes.statefulset.name"] == "db"
    assert metrics["kubernetes.container.name"] == "metrics"
    assert known(enricher, db, "db").fields["kubernetes.container.name"] == "db"
    # Another node's pod is never sent to this node's watch.
    assert by_id(enricher, elsewhere) is None


def test_label_and_annotation_changes_reach_the_next_lookup(
    cluster: Cluster, enrichers: list[Enricher]
) -> None:
    node, ns = kc.unique("node"), kc.unique("team")
    kc.create_namespace(cluster.core, ns, {"tier": "gold"})
    enricher = watcher(cluster, node)
    enrichers.append(enricher)
    web = kc.create_pod(
        cluster.core, ns, kc.pod_manifest("web", node, labels={"version": "v1"}, annotations={})
    )
    assert known(enricher, web).fields["kubernetes.labels"] == {"version": "v1"}

    cluster.core.patch_namespaced_pod(
        "web",
        ns,
        {"metadata": {"labels": {"version": "v2"}, "annotations": {"owner": "team-a"}}},
    )
    cluster.core.patch_namespace(ns, {"metadata": {"labels": {"tier": "silver"}}})

    def changed() -> bool:
        fields = known(enricher, web).fields
        return (
            fields["kubernetes.labels"] == {"version": "v2"}
            and fields.get("kubernetes.annotations") == {"owner": "team-a"}
            and fields["kubernetes.namespace_labels"].get("tier") == "silver"
        )

    until(changed, WAIT, "the new labels, annotation and namespace label")


def test_a_deleted_pod_keeps_its_metadata_for_the_grace_period_then_goes(
    cluster: Cluster, enrichers: list[Enricher]
) -> None:
    """A graceful delete leaves a bound pod terminating (its kubelet would end it): still
    known. Once the kubelet's final delete (grace 0) comes, a collector keeps the pod for its
    own grace period: one with a long one still has it, one with a short one drops it."""
    node, ns = kc.unique("node"), kc.unique("jobs")
    kc.create_namespace(cluster.core, ns, {})
    keeps, drops = watcher(cluster, node), watcher(cluster, node, grace=0.5)
    enrichers.extend([keeps, drops])
    job = kc.create_pod(cluster.core, ns, kc.pod_manifest("migrate", node))
    known(keeps, job)
    known(drops, job)

    cluster.core.delete_namespaced_pod("migrate", ns)  # the pod's own grace: 30 s
    terminating = cluster.core.read_namespaced_pod("migrate", ns)
    assert terminating.metadata.deletion_timestamp is not None
    assert known(keeps, job).fields["kubernetes.pod.name"] == "migrate"

    cluster.core.delete_namespaced_pod("migrate", ns, grace_period_seconds=0)
    until(lambda: by_id(drops, job) is None, WAIT, "the pod dropped after the short grace")
    assert known(keeps, job).fields["kubernetes.pod.uid"] == job["metadata"]["uid"]

    # A StatefulSet's pod comes back with the same name and another uid: that is another pod.
    again = kc.create_pod(cluster.core, ns, kc.pod_manifest("migrate", node))
    assert known(keeps, again).fields["kubernetes.pod.uid"] == again["metadata"]["uid"]
    assert known(keeps, job).fields["kubernetes.pod.uid"] == job["metadata"]["uid"]


def test_a_watch_expired_by_compaction_lists_again_and_forgets_pods_deleted_meanwhile(
    cluster: Cluster, enrichers: list[Enricher]
) -> None:
    """The API server goes away; meanwhile a pod is deleted and etcd's history compacted
    past the collector's resourceVersion. The API server comes back with a fresh watch cache:
    the only answer to the collector's watch is 410 Gone, so it lists again, and the pod
    whose DELETED event is lost is dropped at once."""
    node, ns = kc.unique("node"), kc.unique("batch")
    kc.create_namespace(cluster.core, ns, {})
    enricher = watcher(cluster, node)
    enrichers.append(enricher)
    stays = kc.create_pod(cluster.core, ns, kc.pod_manifest("stays", node))
    goes = kc.create_pod(cluster.core, ns, kc.pod_manifest("goes", node))
    known(enricher, stays)
    known(enricher, goes)
    relists = {r: counter("logferry_collector_relists", r) for r in ("pods", "namespaces")}
    restarts = counter("logferry_collector_watch_restarts", "pods")

    script = cluster.kube.script
    try:
        subprocess.run([script, "stop-apiserver"], check=True, capture_output=True)
        revision = kc.etcd_delete(cluster.kube.etcd_url, f"/registry/pods/{ns}/goes")
        kc.etcd_compact(cluster.kube.etcd_url, revision)
    finally:
        started = subprocess.run([script, "start"], capture_output=True, text=True)
        assert started.returncode == 0, started.stderr

    until(
        lambda: all(
            counter("logferry_collector_relists", r) > relists[r] for r in ("pods", "namespaces")
        ),
        WAIT,
        "a list of pods and namespaces after 410 Gone",
    )
    assert counter("logferry_collector_watch_restarts", "pods") > restarts
    until(lambda: by_id(enricher, goes) is None, WAIT, "the pod deleted meanwhile dropped")
    assert known(enricher, stays).fields["kubernetes.pod.name"] == "stays"
    later = kc.create_pod(cluster.core, ns, kc.pod_manifest("later", node))
    assert known(enricher, later).fields["kubernetes.pod.name"] == "later"


def test_a_node_with_500_pods_and_churn_costs_one_list_and_one_watch_per_resource(
    cluster: Cluster, enrichers: list[Enricher]
) -> None:
    """500 pods on the node (and 50 on another), then churn while the collector watches:
    relabels, status updates (container restarts), deletions and new pods. The audit log of
    the API server shows every request of the collector's ServiceAccount: one list and one
    watch of pods and of namespaces, no GET of any pod, and the cache ends up exact."""
    node, other = kc.unique("node"), kc.unique("node")
    namespaces = [kc.unique("churn") for _ in range(2)]
    for ns in namespaces:
        kc.create_namespace(cluster.core, ns, {"load": "churn"})

    def make(i: int, on: str = node) -> dict[str, Any]:
        ns = namespaces[i % 2]
        return kc.create_pod(
            cluster.core, ns, kc.pod_manifest(f"p{i}", on, labels={"gen": "1", "i": str(i)})
        )

    with ThreadPoolExecutor(4) as pool:
        pods = list(pool.map(make, range(250)))
        elsewhere = list(pool.map(lambda i: make(1000 + i, other), range(50)))

    audit = kc.AuditLog(cluster.kube.audit_log)
    reopened = {r: counter("logferry_collector_watch_restarts", r) for r in ("pods", "namespaces")}
    enricher = watcher(cluster, node)
    enrichers.append(enricher)

    def relabel(pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        cluster.core.patch_namespaced_pod(
            meta["name"], meta["namespace"], {"metadata": {"labels": {"gen": "2"}}}
        )

    def restart(pod: dict[str, Any]) -> None:
        kc.set_running(cluster.core, pod, restart=1)

    def delete(pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        cluster.core.delete_namespaced_pod(meta["name"], meta["namespace"], grace_period_seconds=0)

    with ThreadPoolExecutor(4) as pool:
        pods += list(pool.map(make, range(250, 500)))
        list(pool.map(relabel, pods[:150]))
        list(pool.map(restart, pods[150:250]))
        list(pool.map(delete, pods[250:300]))
        fresh = list(pool.map(make, range(500, 550)))

    def current(pod: dict[str, Any], gen: str, restarts: int) -> bool:
        cid = kc.container_id(pod["metadata"]["uid"], "app", restarts)
        info = enricher.lookup({"container.id": cid})
        return info is not None and info.fields["kubernetes.labels"]["gen"] == gen

    def exact() -> bool:
        return (
            all(current(p, "2", 0) for p in pods[:150])
            and all(current(p, "1", 1) for p in pods[150:250])
            and all(current(p, "1", 0) for p in pods[300:] + fresh)
            and all(enricher.lookup({"kubernetes.pod.uid": p["metadata"]["uid"]}) for p in fresh)
        )

    until(exact, WAIT, "every change of the churn in the collector's cache")
    # Deleted pods are kept for the grace period but no longer live; the other node's never came.
    live = {meta["kubernetes.pod.uid"] for meta in enricher.pods_by_address().values()}
    assert live.isdisjoint(p["metadata"]["uid"] for p in pods[250:300])
    assert all(enricher.lookup({"kubernetes.pod.uid": p["metadata"]["uid"]}) for p in pods[250:300])
    assert not any(enricher.lookup({"kubernetes.pod.uid": p["metadata"]["uid"]}) for p in elsewhere)
    seen = audit.requests(kc.COLLECTOR_USER)
    print(f"requests of the collector under churn: {dict(seen)}")
    # A watch the server ends at its timeout (5 to 10 min) is reopened from where it was,
    # without a list: on a very slow machine that may happen once during the test.
    timeouts = {
        r: counter("logferry_collector_watch_restarts", r) - reopened[r]
        for r in ("pods", "namespaces")
    }
    assert seen == {
        ("list", "pods"): 1,
        ("watch", "pods"): 1 + timeouts["pods"],
        ("list", "namespaces"): 1,
        ("watch", "namespaces"): 1 + timeouts["namespaces"],
    }
    refused = [e for e in audit.events(kc.COLLECTOR_USER) if e["responseStatus"]["code"] >= 400]
    assert refused == [], json.dumps(refused)[:2000]
