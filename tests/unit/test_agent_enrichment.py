"""Records get their pod's metadata from the Kubernetes API, through the agent.

The API server is the stand-in of harness/k8s_api.py, which speaks the list and watch wire
format to the real `kubernetes` client: these run in the unit suite, with no build, and need
its faults on demand (server down at start, a list held back). The real API server's records
are tested in tests/integration/test_kube_enrichment.py and test_kube_rbac.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collector.enrich import Enricher
from collector.metrics import METRICS
from harness.k8s_api import KubeAPI, cid, namespace, pod
from harness.wait import until
from tests.unit.logfiles import ListSink, agent, append, cri_line, docker_line, drain

NODE = "node-a"


def cri_log(tmp: Path, obj: dict[str, Any], container: str = "app") -> Path:
    meta = obj["metadata"]
    folder = tmp / "log" / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid']}" / container
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "0.log"


@pytest.fixture
def api() -> Iterator[KubeAPI]:
    with KubeAPI(bookmark_every=0.2) as server:
        server.add(namespace("shop", labels={"team": "checkout"}))
        yield server.up()


def test_cri_records_carry_labels_owner_and_namespace_labels(
    tmp_path: Path, api: KubeAPI, enricher: Enricher
) -> None:
    cart = pod(
        "cart-7d9f-abcde",
        "shop",
        labels={"app": "cart", "app.kubernetes.io/name": "cart"},
        owner=("ReplicaSet", "cart-7d9f"),
    )
    api.add(cart)
    until(lambda: enricher.lookup({"kubernetes.pod.uid": cart["metadata"]["uid"]}))
    append(cri_log(tmp_path, cart), cri_line("hello"))
    sink = ListSink()
    drain(agent(tmp_path, sink, enricher=enricher))
    (record,) = sink.records
    k8s = record["kubernetes"]
    assert k8s["labels"]["app"] == "cart"
    assert k8s["labels"]["app.kubernetes.io/name"] == "cart"
    assert k8s["deployment"] == {"name": "cart"}
    assert k8s["namespace_labels"]["team"] == "checkout"
    assert k8s["pod"]["ip"] == "10.244.1.7"
    assert record["container"]["id"] == cid(cart)
    assert "tags" not in record


def test_docker_records_are_matched_by_container_id(
    tmp_path: Path, api: KubeAPI, enricher: Enricher
) -> None:
    web = pod("web-1", "shop", labels={"tier": "front"}, runtime="docker")
    api.add(web)
    container = cid(web)
    until(lambda: enricher.lookup({"container.id": container}))
    folder = tmp_path / "docker" / container
    folder.mkdir(parents=True)
    append(folder / f"{container}-json.log", docker_line("from docker"))
    sink = ListSink()
    drain(agent(tmp_path, sink, enricher=enricher))
    assert sink.records[0]["kubernetes"]["labels"] == {"tier": "front"}
    assert sink.records[0]["kubernetes"]["pod"]["name"] == "web-1"


def test_excluded_pods_are_not_read(tmp_path: Path, api: KubeAPI, enricher: Enricher) -> None:
    quiet = pod("quiet", "shop", annotations={"logferry.io/exclude": "true"})
    loud = pod("loud", "shop")
    api.add(quiet)
    api.add(loud)
    until(lambda: enricher.lookup({"kubernetes.pod.uid": loud["metadata"]["uid"]}))
    append(cri_log(tmp_path, quiet), cri_line("secret"))
    append(cri_log(tmp_path, loud), cri_line("public"))
    sink = ListSink()
    a = agent(tmp_path, sink, enricher=enricher)
    drain(a)
    assert sink.messages() == ["public"]
    assert all("quiet" not in f.path for f in a.files.values())


def test_multiline_by_pod_annotation(tmp_path: Path, api: KubeAPI, enricher: Enricher) -> None:
    java = pod("api", "shop", annotations={"logferry.io/multiline": "java"})
    api.add(java)
    until(lambda: enricher.lookup({"kubernetes.pod.uid": java["metadata"]["uid"]}))
    append(
        cri_log(tmp_path, java),
        cri_line("java.lang.IllegalStateException: boom"),
        cri_line("\tat com.shop.Api.handle(Api.java:7)"),
        cri_line("next"),
    )
    sink = ListSink()
    drain(agent(tmp_path, sink, "--multiline-timeout", "0", enricher=enricher))
    assert sink.messages() == [
        "java.lang.IllegalStateException: boom\n\tat com.shop.Api.handle(Api.java:7)",
        "next",
    ]


def test_parser_by_pod_and_container_annotation(
    tmp_path: Path, api: KubeAPI, enricher: Enricher
) -> None:
    """A pod says `none` for all its containers; one container of another says `logfmt`;
    a pod with a wrong value gets the node's default (auto) and a warning."""
    raw = pod("raw", "shop", annotations={"logferry.io/parser": "none"})
    kv = pod("kv", "shop", annotations={"logferry.io/parser.app": "logfmt"})
    odd = pod("odd", "shop", annotations={"logferry.io/parser": "yaml"})
    for p in (raw, kv, odd):
        api.add(p)
        until(lambda p=p: enricher.lookup({"kubernetes.pod.uid": p["metadata"]["uid"]}))
    text = '{"msg":"hello","level":"warn"}'
    append(cri_log(tmp_path, raw), cri_line(text))
    append(cri_log(tmp_path, kv), cri_line("msg=hi user=bob"))
    append(cri_log(tmp_path, odd), cri_line(text))
    sink = ListSink()
    drain(agent(tmp_path, sink, enricher=enricher))
    by_pod = {r["kubernetes"]["pod"]["name"]: r for r in sink.records}
    assert by_pod["raw"]["message"] == text
    assert "json" not in by_pod["raw"]
    assert by_pod["kv"]["message"] == "hi"
    assert by_pod["kv"]["json"] == {"user": "bob"}
    assert by_pod["odd"]["message"] == "hello"
    assert by_pod["odd"]["log"]["level"] == "warn"


def test_a_label_change_reaches_new_records(
    tmp_path: Path, api: KubeAPI, enricher: Enricher
) -> None:
    shop = pod("shop-1", "shop", labels={"version": "1"})
    api.add(shop)
    uid = shop["metadata"]["uid"]
    until(lambda: enricher.lookup({"kubernetes.pod.uid": uid}))
    log = cri_log(tmp_path, shop)
    append(log, cri_line("before"))
    sink = ListSink()
    a = agent(tmp_path, sink, enricher=enricher)
    drain(a)
    shop["metadata"]["labels"]["version"] = "2"
    api.modify(shop)
    until(lambda: enricher.lookup({"kubernetes.pod.uid": uid}).fields["kubernetes.labels"]
          == {"version": "2"})  # fmt: skip
    append(log, cri_line("after"))
    drain(a)
    assert [r["kubernetes"]["labels"]["version"] for r in sink.records] == ["1", "2"]


def test_a_deleted_pods_late_lines_keep_its_metadata(
    tmp_path: Path, api: KubeAPI, enricher: Enricher
) -> None:
    job = pod("migrate-28830140-x1", "shop", owner=("Job", "migrate-28830140"))
    api.add(job)
    uid = job["metadata"]["uid"]
    until(lambda: enricher.lookup({"kubernetes.pod.uid": uid}))
    append(cri_log(tmp_path, job), cri_line("done"))
    api.delete(job)
    time.sleep(0.3)
    sink = ListSink()
    drain(agent(tmp_path, sink, enricher=enricher))
    (record,) = sink.records
    assert record["kubernetes"]["job"] == {"name": "migrate-28830140"}
    assert record["kubernetes"]["cronjob"] == {"name": "migrate"}


def test_api_down_at_start_records_are_tagged_then_enriched(tmp_path: Path) -> None:
    with KubeAPI(bookmark_every=0.2) as api:
        api.add(namespace("shop"))
        late = pod("late", "shop", labels={"app": "late"})
        api.add(late)
        enricher = Enricher(NODE, kubeconfig=api.kubeconfig(tmp_path / "kc"), backoff_max=0.2)
        enricher.start()
        try:
            log = cri_log(tmp_path, late)
            append(log, cri_line("early"))
            sink = ListSink()
            a = agent(tmp_path, sink, "--metadata-wait", "0.2", enricher=enricher)
            started = time.monotonic()
            until(lambda: (drain(a, turns=1), sink.records)[1])
            assert time.monotonic() - started >= 0.2
            assert sink.records[0]["tags"] == ["metadata_missing"]
            assert sink.records[0]["kubernetes"]["pod"]["name"] == "late"
            api.up()
            until(lambda: enricher.lookup({"kubernetes.pod.uid": late["metadata"]["uid"]}))
            append(log, cri_line("later"))
            drain(a)
            assert sink.records[1]["message"] == "later"
            assert "tags" not in sink.records[1]
            assert sink.records[1]["kubernetes"]["labels"] == {"app": "late"}
        finally:
            enricher.stop()


def test_records_wait_for_the_first_list_of_namespaces_too(tmp_path: Path) -> None:
    """A restart on a busy node: the pods are listed, the namespaces not yet. Records wait
    for the namespaces list (bounded by --metadata-wait) instead of going out without
    `kubernetes.namespace_labels`. The stand-in holds that list back: a real API server
    cannot be made to answer one list long after the other on demand."""
    with KubeAPI(bookmark_every=0.2) as api:
        api.add(namespace("shop", labels={"team": "checkout"}))
        cart = pod("cart", "shop", labels={"app": "cart"})
        api.add(cart)
        api.hold("namespaces")
        api.up()
        enricher = Enricher(NODE, kubeconfig=api.kubeconfig(tmp_path / "kc"), backoff_max=0.2)
        enricher.start()
        try:
            until(lambda: api.open_watches("pods"), timeout=30)  # the pods are listed
            append(cri_log(tmp_path, cart), cri_line("right after the restart"))
            sink = ListSink()
            a = agent(tmp_path, sink, "--metadata-wait", "600", enricher=enricher)
            drain(a)
            assert sink.records == []
            api.release("namespaces")
            until(lambda: (drain(a, turns=1), sink.records)[1], timeout=30)
            (record,) = sink.records
            assert record["kubernetes"]["namespace_labels"]["team"] == "checkout"
            assert record["kubernetes"]["labels"] == {"app": "cart"}
            assert "tags" not in record
        finally:
            api.release("namespaces")
            enricher.stop()


def test_records_wait_for_the_apis_first_answer_not_just_metadata_wait(tmp_path: Path) -> None:
    """A restart on a loaded node: the files are found at once, the API answers the first
    lists seconds later (tests/e2e/test_gzip_rotation.py saw 4-8 s). `--metadata-wait`
    is for a new pod the watch has not told of yet; counted from when the files were
    found, it ran out while the lists were still in flight, and whole backlogs went out
    without pod metadata. The stand-in holds both lists back: a real API server cannot be
    made to answer late on demand."""
    with KubeAPI(bookmark_every=0.2) as api:
        api.add(namespace("shop", labels={"team": "checkout"}))
        cart = pod("cart", "shop", labels={"app": "cart"})
        api.add(cart)
        api.hold("pods")
        api.hold("namespaces")
        api.up()
        enricher = Enricher(NODE, kubeconfig=api.kubeconfig(tmp_path / "kc"), backoff_max=0.2)
        enricher.start()
        try:
            append(cri_log(tmp_path, cart), cri_line("right after the restart"))
            sink = ListSink()
            a = agent(tmp_path, sink, "--metadata-wait", "0.1", enricher=enricher)
            drain(a, turns=1)
            (group,) = a.groups.values()
            # Ten times the metadata wait, the lists still held: nothing goes.
            while time.monotonic() - group.born < 1.0:
                drain(a, turns=1)
                time.sleep(0.02)
            assert sink.records == []
            api.release("pods")
            api.release("namespaces")
            until(lambda: (drain(a, turns=1), sink.records)[1], timeout=30)
            (record,) = sink.records
            assert "tags" not in record
            assert record["kubernetes"]["labels"] == {"app": "cart"}
            assert record["kubernetes"]["namespace_labels"]["team"] == "checkout"
        finally:
            api.release("pods")
            api.release("namespaces")
            enricher.stop()


def let_go(reason: str) -> tuple[float, float]:
    return (
        METRICS.files_let_go.labels(reason)._value.get(),
        METRICS.unread_bytes_let_go.labels(reason)._value.get(),
    )


def test_excluding_a_pod_after_its_files_were_opened_closes_them(
    tmp_path: Path, api: KubeAPI, enricher: Enricher, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "collector.agent")
    noisy = pod("noisy", "shop", containers=("app", "sidecar"))
    api.add(noisy)
    uid = noisy["metadata"]["uid"]
    until(lambda: enricher.lookup({"kubernetes.pod.uid": uid}))
    app, sidecar = cri_log(tmp_path, noisy), cri_log(tmp_path, noisy, "sidecar")
    append(app, cri_line("app before"))
    append(sidecar, cri_line("sidecar before"))
    sink = ListSink()
    a = agent(tmp_path, sink, enricher=enricher)
    drain(a)
    assert len(a.files) == 2
    files, unread = let_go("excluded")

    noisy["metadata"]["annotations"] = {"logferry.io/exclude-containers": "sidecar"}
    api.modify(noisy)
    until(lambda: enricher.lookup({"kubernetes.pod.uid": uid, "kubernetes.container.name":
                                   "sidecar"}).excluded)  # fmt: skip
    quiet = cri_line("sidecar while excluded")
    append(sidecar, quiet)
    append(app, cri_line("app after"))
    drain(a)
    assert [f.path for f in a.files.values()] == [str(app)]
    assert let_go("excluded") == (files + 1, unread + len(quiet))
    assert any(str(sidecar) in r.getMessage() for r in caplog.records)

    noisy["metadata"]["annotations"] = {"logferry.io/exclude": "true"}
    api.modify(noisy)
    until(lambda: enricher.lookup({"kubernetes.pod.uid": uid}).excluded)
    append(app, cri_line("app while excluded"))
    drain(a)
    assert a.files == {}
    assert let_go("excluded")[0] == files + 2

    # Lifting the exclusion ships what is written from then on, not what was excluded.
    noisy["metadata"]["annotations"] = {}
    api.modify(noisy)
    until(lambda: not enricher.lookup({"kubernetes.pod.uid": uid}).excluded)
    append(app, cri_line("app later"))
    append(sidecar, cri_line("sidecar later"))
    drain(a)
    assert sink.messages() == [
        "app before", "sidecar before", "app after", "app later", "sidecar later"
    ]  # fmt: skip


def test_excluded_pods_do_not_wait_for_a_slot_under_max_open_files(
    tmp_path: Path, api: KubeAPI, enricher: Enricher
) -> None:
    """Looked at only once a slot was free, excluded pods' files counted as waiting: "files
    wait" said, and open files let go at every scan to make room for files never opened."""
    loud = pod("a-loud", "shop")
    quiet = [
        pod(f"z-quiet-{n}", "shop", annotations={"logferry.io/exclude": "true"}) for n in range(3)
    ]
    for each in (loud, *quiet):
        api.add(each)
    for each in (loud, *quiet):
        until(lambda each=each: enricher.lookup({"kubernetes.pod.uid": each["metadata"]["uid"]}))
    # Found first, the loud pod's file takes the one slot before the quiet ones are looked at.
    append(cri_log(tmp_path, loud), cri_line("public"))
    for each in quiet:
        append(cri_log(tmp_path, each), cri_line("secret"))
    made_room = METRICS.files_made_room._value.get()
    sink = ListSink()
    a = agent(tmp_path, sink, "--max-open-files", "1", enricher=enricher)
    drain(a)
    assert sink.messages() == ["public"]
    assert a.open_files.waiting == 0
    assert METRICS.files_made_room._value.get() == made_room
    assert [f.path for f in a.open_files.files.values()] == [str(cri_log(tmp_path, loud))]
