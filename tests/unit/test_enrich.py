"""Pod metadata from the Kubernetes API: the real `kubernetes` client against harness.k8s_api,
a local stand-in for the API server that speaks its list and watch wire format. It is used here
for the faults a real server cannot be made to produce on demand in a unit test (a watch dropped
or expired at a chosen moment, 403 switched on and off, the server gone and back at once); the
same behaviour on the real API server is in tests/integration/test_kube_enrichment.py."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from collector.encode import nest
from collector.enrich import Enricher, PodInfo
from harness.k8s_api import KubeAPI, cid, namespace, pod
from harness.wait import until

NODE = "node-a"
PODS = "/api/v1/pods"
NAMESPACES = "/api/v1/namespaces"


def metric(name: str, resource: str = "pods") -> float:
    value = REGISTRY.get_sample_value(f"logferry_collector_{name}_total", {"resource": resource})
    return value or 0.0


def docker_meta(obj: dict[str, Any], container: str = "app") -> dict[str, str]:
    """What collector.discover reads from a Docker folder's config.v2.json."""
    return {
        "container.id": cid(obj, container),
        "container.runtime": "docker",
        "kubernetes.namespace": obj["metadata"]["namespace"],
        "kubernetes.pod.name": obj["metadata"]["name"],
        "kubernetes.pod.uid": obj["metadata"]["uid"],
        "kubernetes.container.name": container,
    }


def cri_meta(obj: dict[str, Any], container: str = "app") -> dict[str, str]:
    """What collector.discover reads from /var/log/pods/<ns>_<pod>_<uid>/<container>/0.log."""
    return {
        "kubernetes.namespace": obj["metadata"]["namespace"],
        "kubernetes.pod.name": obj["metadata"]["name"],
        "kubernetes.pod.uid": obj["metadata"]["uid"],
        "kubernetes.container.name": container,
    }


def found(enricher: Enricher, meta: dict[str, str]) -> PodInfo:
    return until(lambda: enricher.lookup(meta))


@pytest.fixture
def api() -> Iterator[KubeAPI]:
    with KubeAPI(bookmark_every=0.2) as server:
        server.add(namespace("default"))
        server.add(namespace("shop", labels={"team": "checkout"}))
        yield server.up()


@pytest.fixture
def enricher(api: KubeAPI, tmp_path: Path) -> Iterator[Callable[..., Enricher]]:
    """Starts Enrichers on the stand-in (short backoff); stops them after the test."""
    started: list[Enricher] = []

    def start(wait: bool = True, **kwargs: Any) -> Enricher:
        kwargs.setdefault("backoff_max", 0.2)
        made = Enricher(NODE, kubeconfig=api.kubeconfig(tmp_path / "kubeconfig"), **kwargs)
        made.start()
        started.append(made)
        if wait:
            until(lambda: made.synced and made.available)
        return made

    yield start
    for made in started:
        made.stop()


def test_pods_are_known_after_start_by_container_id_uid_or_name(api, enricher):
    web = pod(
        "web-7d9f8b6c5d-x2x4q",
        "shop",
        labels={"app": "web"},
        annotations={"prometheus.io/scrape": "true"},
        owner=("ReplicaSet", "web-7d9f8b6c5d"),
        containers=("app", "sidecar"),
        ip="10.244.1.23",
    )
    api.add(web)
    api.add(pod("elsewhere", "shop", node="node-b"))
    e = enricher()
    assert e.synced
    assert e.available

    docker = e.lookup(docker_meta(web, "sidecar"))
    assert docker is not None
    assert docker.fields == {
        "kubernetes.namespace": "shop",
        "kubernetes.pod.name": "web-7d9f8b6c5d-x2x4q",
        "kubernetes.pod.uid": web["metadata"]["uid"],
        "kubernetes.pod.ip": "10.244.1.23",
        "kubernetes.node.name": NODE,
        "kubernetes.labels": {"app": "web", "pod-template-hash": "7d9f8b6c5d"},
        "kubernetes.annotations": {"prometheus.io/scrape": "true"},
        "kubernetes.namespace_labels": {"kubernetes.io/metadata.name": "shop", "team": "checkout"},
        "kubernetes.replicaset.name": "web-7d9f8b6c5d",
        "kubernetes.deployment.name": "web",
        "kubernetes.container.name": "sidecar",
        "container.image.name": "registry.example/app:1.2",
        "container.id": cid(web, "sidecar"),
        "container.runtime": "containerd",
    }
    assert docker.excluded is False
    assert docker.multiline is None

    # A Docker file is matched by its id alone, whatever else the meta says.
    assert e.lookup({"container.id": cid(web, "app")}).fields["kubernetes.container.name"] == "app"
    assert e.lookup({"container.id": f"containerd://{cid(web, 'app')}"}) is not None
    # A CRI file names no id: it is found by uid, and gets its container's current id.
    cri = e.lookup(cri_meta(web, "app"))
    assert cri.fields["container.id"] == cid(web, "app")
    assert cri.fields["kubernetes.container.name"] == "app"
    # A /var/log/containers link gives namespace, name, container and id.
    link = {
        "kubernetes.namespace": "shop",
        "kubernetes.pod.name": "web-7d9f8b6c5d-x2x4q",
        "kubernetes.container.name": "sidecar",
        "container.id": "f" * 64,
    }
    assert e.lookup(link).fields["kubernetes.pod.uid"] == web["metadata"]["uid"]
    assert e.lookup(link).fields["container.id"] == "f" * 64
    # Another node's pods are not watched at all.
    assert e.lookup({"kubernetes.namespace": "shop", "kubernetes.pod.name": "elsewhere"}) is None
    assert e.lookup({"container.id": "0" * 64}) is None
    # Repeated lookups give the memoised object: cheap for the agent's hot path.
    assert e.lookup(docker_meta(web, "sidecar")) is docker


def test_a_previous_run_and_init_containers_are_known_by_id(api, enricher):
    job = pod("crashy", restarts=3, init_containers=("migrate",), containers=("app",))
    api.add(job)
    e = enricher()
    previous = job["status"]["containerStatuses"][0]["lastState"]["terminated"]["containerID"]
    old = e.lookup({"container.id": previous.split("://")[1]})
    assert old.fields["kubernetes.container.name"] == "app"
    assert old.fields["container.id"] == previous.split("://")[1]
    init = e.lookup({"container.id": cid(job, "migrate")})
    assert init.fields["kubernetes.container.name"] == "migrate"


def test_name_fallback_only_for_the_same_pod_or_its_mirror(api, enricher):
    static = pod("etcd-node-a", "default", annotations={"kubernetes.io/config.mirror": "abc123"})
    stateful = pod("db-0", "default", owner=("StatefulSet", "db"))
    api.add(static)
    api.add(stateful)
    e = enricher()
    # kubelet's directory of a static pod carries the manifest hash, not the API's uid.
    mirror = e.lookup({**cri_meta(static), "kubernetes.pod.uid": "abc123"})
    assert mirror.fields["kubernetes.pod.uid"] == static["metadata"]["uid"]
    # A file of an earlier db-0 (another uid) is not given the new pod's metadata.
    assert e.lookup({**cri_meta(stateful), "kubernetes.pod.uid": "old-uid"}) is None


def test_a_label_change_reaches_the_next_lookup(api, enricher):
    web = pod("web-1", "shop", labels={"app": "web", "version": "1"})
    api.add(web)
    e = enricher()
    meta = docker_meta(web)
    assert e.lookup(meta).fields["kubernetes.labels"]["version"] == "1"
    before = e.version
    web["metadata"]["labels"]["version"] = "2"
    api.modify(web)
    until(lambda: e.version > before)
    assert e.lookup(meta).fields["kubernetes.labels"] == {"app": "web", "version": "2"}


def test_a_namespace_label_change_reaches_the_next_lookup(api, enricher):
    web = pod("web-1", "shop")
    api.add(web)
    e = enricher()
    meta = cri_meta(web)
    assert e.lookup(meta).fields["kubernetes.namespace_labels"]["team"] == "checkout"
    api.modify(namespace("shop", labels={"team": "payments"}))
    until(lambda: e.lookup(meta).fields["kubernetes.namespace_labels"]["team"] == "payments")


def test_a_deleted_pod_is_kept_for_the_grace_period_then_purged(api, enricher):
    job = pod("report-29301840-abcde", owner=("Job", "report-29301840"))
    api.add(job)
    e = enricher(grace=0.5)
    meta = docker_meta(job)
    assert e.lookup(meta) is not None
    before = e.version
    deleted = time.monotonic()
    api.delete(job)
    until(lambda: e.version > before)
    info = e.lookup(meta)
    assert info is not None, "late lines of a deleted pod still get its metadata"
    assert info.fields["kubernetes.cronjob.name"] == "report"
    until(lambda: e.lookup(meta) is None, timeout=2.0)
    assert time.monotonic() - deleted >= 0.5
    assert e.lookup(cri_meta(job)) is None


def test_a_410_mid_watch_lists_again_and_keeps_watching(api, enricher):
    web = pod("web-1")
    api.add(web)
    e = enricher()
    assert api.count("list", PODS) == 1
    relists, restarts = metric("relists"), metric("watch_restarts")
    api.expire()
    until(lambda: api.count("list", PODS) == 2 and api.count("list", NAMESPACES) == 2)
    until(lambda: api.open_watches() == 2)
    assert metric("relists") == relists + 1
    assert metric("watch_restarts") == restarts + 1
    assert REGISTRY.get_sample_value("logferry_collector_metadata_cache_pods") == 1
    assert e.lookup(docker_meta(web)) is not None
    late = pod("web-2")
    api.add(late)
    found(e, docker_meta(late))
    assert e.available


def test_a_pod_deleted_while_the_watch_was_broken_is_not_left_in_the_cache(api, enricher):
    kept, gone = pod("kept"), pod("gone")
    api.add(kept)
    api.add(gone)
    e = enricher(grace=60.0)
    api.down()
    api.delete(gone)
    added = pod("added")
    api.add(added)
    api.compact()
    api.up()
    found(e, docker_meta(added))
    assert e.lookup(docker_meta(gone)) is None
    assert e.lookup(cri_meta(gone)) is None
    assert e.lookup(docker_meta(kept)) is not None
    assert api.count("list", PODS) == 2
    resumed = [q for key, q in api.log if key == f"watch {PODS}"][1:]
    assert int(resumed[0]["resourceVersion"]) < api.compacted_rv, "it tried to resume first"


def test_a_broken_watch_resumes_from_the_last_bookmark_without_listing(api, enricher):
    api.add(pod("web-1"))
    e = enricher()
    # Changes on other nodes are filtered out of our watch; only bookmarks move it forward.
    for n in range(3):
        api.add(pod(f"other-{n}", node="node-b"))
    bookmark = api.rv
    # Two bookmarks past it: the client has read the first by the time the second is sent.
    until(lambda: sum(b == ("pods", bookmark) for b in api.bookmarks) >= 2)
    api.drop_watches()
    until(lambda: api.count("watch", PODS) == 2)
    resumed = [q for key, q in api.log if key == f"watch {PODS}"][-1]
    assert resumed["resourceVersion"] == str(bookmark)
    assert resumed["allowWatchBookmarks"] == "true"
    assert resumed["fieldSelector"] == f"spec.nodeName={NODE}"
    assert api.count("list", PODS) == 1
    later = pod("web-2")
    api.add(later)
    found(e, docker_meta(later))


def test_api_down_at_start_then_up(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="collector.enrich")
    with KubeAPI() as server:
        web = pod("web-1")
        server.add(namespace("default"))
        server.add(web)
        e = Enricher(NODE, kubeconfig=server.kubeconfig(tmp_path / "kc"), backoff_max=0.1)
        e.start()
        try:
            time.sleep(0.5)
            assert not e.available
            assert not e.synced
            assert e.lookup(docker_meta(web)) is None
            warnings = [r for r in caplog.records if r.name == "collector.enrich"]
            assert len(warnings) == 1, "the reason is logged once, not per retry"
            assert "Connection refused" in warnings[0].getMessage()
            server.up()
            info = found(e, docker_meta(web))
            assert info.fields["kubernetes.pod.name"] == "web-1"
            until(lambda: e.available and e.synced)
        finally:
            e.stop()


def test_no_api_configuration_is_logged_once_and_never_raises(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="collector.enrich")
    e = Enricher(NODE, kubeconfig=str(tmp_path / "missing"), backoff_max=0.05)
    e.start()
    try:
        time.sleep(0.3)
        assert not e.available
        assert not e.synced
        assert e.lookup({"container.id": "a" * 64}) is None
        assert len(caplog.records) == 1
        assert "ConfigException" not in caplog.records[0].getMessage()
        assert "kube-config" in caplog.records[0].getMessage()
    finally:
        e.stop()


def test_forbidden_is_logged_once_and_retried(api, enricher, caplog):
    caplog.set_level(logging.INFO, logger="collector.enrich")
    web = pod("web-1")
    api.add(web)
    api.forbidden = True
    e = enricher(wait=False, backoff_max=0.05)
    until(lambda: api.count("list", PODS) >= 5 and api.count("list", NAMESPACES) >= 5)
    assert not e.available
    assert e.lookup(docker_meta(web)) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "HTTP 403 Forbidden" in warnings[0].getMessage()
    assert "system:serviceaccount:logging:logferry" in warnings[0].getMessage()
    api.forbidden = False
    found(e, docker_meta(web))
    until(lambda: e.available)
    assert any("reachable again" in r.getMessage() for r in caplog.records)


def test_exclusion_by_pod_namespace_or_container_annotation(api, enricher):
    api.add(namespace("noisy", annotations={"logferry.io/exclude": "true"}))
    skipped = pod("skipped", annotations={"logferry.io/exclude": "true"})
    in_noisy = pod("chatty", "noisy")
    partly = pod(
        "partly",
        containers=("app", "istio-proxy", "linkerd"),
        annotations={"logferry.io/exclude-containers": "istio-proxy, linkerd"},
    )
    plain = pod("plain", annotations={"logferry.io/exclude": "false"})
    for obj in (skipped, in_noisy, partly, plain):
        api.add(obj)
    e = enricher()
    assert e.lookup(docker_meta(skipped)).excluded
    assert found(e, docker_meta(in_noisy)).excluded
    assert not e.lookup(docker_meta(partly, "app")).excluded
    assert e.lookup(docker_meta(partly, "istio-proxy")).excluded
    assert e.lookup(cri_meta(partly, "linkerd")).excluded
    assert not e.lookup(docker_meta(plain)).excluded


def test_multiline_per_container_wins_over_the_pod_wide_one(api, enricher):
    obj = pod(
        "mixed",
        containers=("api", "worker", "sidecar"),
        annotations={
            "logferry.io/multiline": "java",
            "logferry.io/multiline.worker": "python",
            "logferry.io/multiline.sidecar": r"^\d{4}-\d{2}-\d{2} ",
        },
    )
    api.add(obj)
    api.add(pod("single"))
    e = enricher()
    assert e.lookup(docker_meta(obj, "api")).multiline == "java"
    assert e.lookup(docker_meta(obj, "worker")).multiline == "python"
    assert e.lookup(cri_meta(obj, "sidecar")).multiline == r"^\d{4}-\d{2}-\d{2} "
    assert (
        e.lookup({"kubernetes.namespace": "default", "kubernetes.pod.name": "single"}) is not None
    )
    assert e.lookup(cri_meta(pod("single"))) is None, "another uid: another pod"


def test_label_keys_with_dots_are_kept_as_given(api, enricher):
    obj = pod(
        "web-1",
        labels={
            "app": "web",
            "app.kubernetes.io/name": "web-ui",
            "app.kubernetes.io/part-of": "shop",
        },
    )
    api.add(obj)
    e = enricher()
    assert e.lookup(docker_meta(obj)).fields["kubernetes.labels"] == {
        "app": "web",
        "app.kubernetes.io/name": "web-ui",
        "app.kubernetes.io/part-of": "shop",
    }


def test_fields_nest_into_the_record_contract(api, enricher):
    obj = pod("web-1", "shop", labels={"app": "web", "app.kubernetes.io/name": "web-ui"})
    api.add(obj)
    e = enricher()
    record = nest(e.lookup(docker_meta(obj)).fields)
    assert record["kubernetes"]["labels"] == {"app": "web", "app.kubernetes.io/name": "web-ui"}
    assert record["kubernetes"]["pod"]["name"] == "web-1"
    assert record["kubernetes"]["namespace"] == "shop"
    assert record["kubernetes"]["namespace_labels"]["team"] == "checkout"
    assert record["container"]["image"]["name"] == "registry.example/app:1.2"


def test_annotations_are_filtered_by_the_include_globs(api, enricher):
    obj = pod(
        "web-1",
        annotations={
            "prometheus.io/scrape": "true",
            "prometheus.io/port": "9090",
            "kubectl.kubernetes.io/last-applied-configuration": "{...}",
            "team": "a",
        },
    )
    api.add(obj)
    e = enricher(annotations=["prometheus.io/*", "team"])
    assert e.lookup(docker_meta(obj)).fields["kubernetes.annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9090",
        "team": "a",
    }


@pytest.mark.parametrize(
    ("owner", "labels", "expected"),
    [
        (
            ("ReplicaSet", "checkout-5f7b9c8d4"),
            {},
            {
                "kubernetes.replicaset.name": "checkout-5f7b9c8d4",
                "kubernetes.deployment.name": "checkout",
            },
        ),
        (
            ("ReplicaSet", "handmade"),
            {},
            {"kubernetes.replicaset.name": "handmade"},
        ),
        (("StatefulSet", "db"), {}, {"kubernetes.statefulset.name": "db"}),
        (("DaemonSet", "logferry"), {}, {"kubernetes.daemonset.name": "logferry"}),
        (("Job", "migrate-2"), {}, {"kubernetes.job.name": "migrate-2"}),
        (
            ("Job", "nightly-backup-29301840"),
            {},
            {
                "kubernetes.job.name": "nightly-backup-29301840",
                "kubernetes.cronjob.name": "nightly-backup",
            },
        ),
        (None, {}, {}),
    ],
)
def test_owner_workload(api, enricher, owner, labels, expected):
    obj = pod("p-1", owner=owner, labels=labels)
    api.add(obj)
    e = enricher()
    fields = e.lookup(docker_meta(obj)).fields
    workload = {
        k: v
        for k, v in fields.items()
        if k.split(".")[1]
        in ("replicaset", "deployment", "statefulset", "daemonset", "job", "cronjob")
    }
    assert workload == expected


def test_one_list_and_one_watch_per_resource_whatever_the_churn(api, enricher):
    for n in range(20):
        api.add(pod(f"seed-{n}"))
    e = enricher()
    churn = []
    for n in range(100):
        obj = pod(f"churn-{n}", "shop")
        api.add(obj)
        obj["metadata"]["labels"]["phase"] = "ready"
        api.modify(obj)
        churn.append(obj)
    for obj in churn[:50]:
        api.delete(obj)
    api.modify(namespace("shop", labels={"team": "other"}))
    last = churn[-1]

    def caught_up() -> bool:
        info = e.lookup(docker_meta(last))
        return info is not None and info.fields["kubernetes.labels"].get("phase") == "ready"

    until(caught_up)
    assert api.count("list", PODS) == 1
    assert api.count("watch", PODS) == 1
    assert api.count("list", NAMESPACES) == 1
    assert api.count("watch", NAMESPACES) == 1
    assert api.count("get") == 0, "never a GET per pod"
    assert set(api.requests) == {
        f"list {PODS}",
        f"watch {PODS}",
        f"list {NAMESPACES}",
        f"watch {NAMESPACES}",
    }


def test_stop_closes_the_open_watches(api, enricher):
    e = enricher()
    e.stop()
    until(lambda: api.open_watches() == 0)


def test_the_first_answer_is_logged_once_with_what_was_listed(api, enricher, caplog):
    """Records wait for it: operators (and the end-to-end flows) see when they may go."""
    caplog.set_level(logging.INFO, logger="collector.enrich")
    api.add(pod("web-1"))
    api.add(pod("web-2"))
    e = enricher()
    later = pod("web-3")
    api.add(later)
    found(e, docker_meta(later))
    answers = [r.getMessage() for r in caplog.records if "API answered" in r.getMessage()]
    assert answers == ["kubernetes API answered: 2 pods, 2 namespaces"]


def unreadable(resource: str) -> float:
    name = "logferry_collector_kubernetes_objects_unreadable_total"
    return REGISTRY.get_sample_value(name, {"resource": resource}) or 0.0


def test_a_pod_object_that_cannot_be_read_is_skipped_counted_and_the_rest_kept() -> None:
    """An API server validates pods, but a proxy or an aggregated API may not: one such
    object stopped the list (or the watch, at that event, for good), and no pod of the node
    had metadata."""
    enricher = Enricher("node-a")
    before = unreadable("pods")
    bad_labels = pod("bad-labels")
    bad_labels["metadata"]["labels"] = ["not", "a", "map"]
    bad_containers = pod("bad-containers")
    bad_containers["spec"]["containers"] = ["app"]
    good = pod("good", labels={"app": "web"})
    enricher._replace_pods([bad_labels, bad_containers, good])
    enricher._replace_namespaces([])
    assert unreadable("pods") == before + 2
    info = enricher.lookup(
        {"kubernetes.namespace": "default", "kubernetes.pod.name": "good",
         "kubernetes.container.name": "app"}
    )  # fmt: skip
    assert info is not None
    assert info.fields["kubernetes.labels"] == {"app": "web"}
    # The same object in a watch event: skipped, and the watch goes on to the next.
    enricher._pod_event("MODIFIED", bad_labels)
    assert unreadable("pods") == before + 3


def test_a_finished_pod_claims_no_address() -> None:
    """Kubernetes keeps status.podIP on a Succeeded or Failed pod (a Job's) after the address
    went to another pod: the forward listener's peer would get the finished pod's metadata,
    or, once both show it, none."""
    enricher = Enricher("node-a")
    done = pod("report-28000000-abcde", ip="10.244.1.50", owner=("Job", "report-28000000"))
    done["status"]["phase"] = "Succeeded"
    failed = pod("migrate-1", ip="10.244.1.51")
    failed["status"]["phase"] = "Failed"
    web = pod("web-1", "shop", ip="10.244.1.50")
    enricher._replace_pods([done, failed, web])
    enricher._replace_namespaces([])
    by_address = enricher.pods_by_address()
    assert by_address["10.244.1.50"]["kubernetes.pod.name"] == "web-1"
    assert "10.244.1.51" not in by_address
