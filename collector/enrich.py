"""Pod metadata for records, from one list+watch of this node's pods and one of namespaces.

The API server is asked nothing per pod: two reflectors (collector.kube) keep a cache that the
agent reads on its hot path without taking a lock. Writers (the two watch threads and the
janitor) change the cache under a lock, one dict operation at a time, and every cached object
is immutable once published, so a reader sees either the old or the new state of a pod, never
half of it. The PodInfo built for a (pod, container) is memoised on the pod object itself: a
new version of the pod is a new object with an empty memo, and a changed namespace is noticed
because the memo remembers the namespace object it was built from.

Deleted pods and namespaces stay for a grace period, because the last lines of a Job or of a
crashed pod are often read after the pod is gone. A relist after 410 Gone replaces the cache
with what the list says: a pod missing from it is dropped at once, since its DELETED event was
lost and nothing tells when it went.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kubernetes import client
from prometheus_client import Counter, Gauge
from urllib3 import HTTPResponse

from collector.kube import Reflector, api_client, describe

log = logging.getLogger("collector.enrich")

T = TypeVar("T")

WATCH_RESTARTS = Counter(
    "logferry_collector_watch_restarts",
    "Watches of the Kubernetes API opened again after one ended, by resource",
    ["resource"],
)
RELISTS = Counter(
    "logferry_collector_relists",
    "Lists of the Kubernetes API after the first one (watch history expired), by resource",
    ["resource"],
)
UNREADABLE = Counter(
    "logferry_collector_kubernetes_objects_unreadable",
    "Objects from the Kubernetes API that could not be read (fields of the wrong type), "
    "skipped, by resource",
    ["resource"],
)
FINISHED = ("Succeeded", "Failed")
"""Pod phases after which the pod's address may already be another pod's."""
CACHE_PODS = Gauge(
    "logferry_collector_metadata_cache_pods",
    "Pods in the metadata cache, deleted ones still in their grace period included",
)

EXCLUDE = "logferry.io/exclude"
EXCLUDE_CONTAINERS = "logferry.io/exclude-containers"
MULTILINE = "logferry.io/multiline"
PARSER = "logferry.io/parser"
RATE_LIMIT = "logferry.io/rate-limit"
MIRROR = "kubernetes.io/config.mirror"
"""On a static pod's mirror: the uid kubelet uses on disk, which differs from the API's uid."""
CRONJOB_JOB = re.compile(r"^(?P<cronjob>.+)-\d{8,}$")
"""The CronJob controller names a Job `<cronjob>-<scheduled time in minutes since 1970>`, eight
digits until the 22nd century; fewer digits are far more likely a hand-made `migrate-2`."""
SPEC_GROUPS = ("initContainers", "containers", "ephemeralContainers")
STATUS_GROUPS = ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses")


@dataclass(frozen=True)
class PodInfo:
    """What the API says about one container of one pod. Shared between callers: read only."""

    fields: dict[str, Any]
    """Flat contract keys (`kubernetes.pod.name`, `container.image.name`, ...) -> values;
    `kubernetes.labels`, `kubernetes.annotations` and `kubernetes.namespace_labels` hold
    dicts whose keys keep their dots."""
    excluded: bool
    multiline: str | None
    parser: str | None = None
    """The container's `logferry.io/parser[.<container>]` annotation, as written."""
    rate_limit: str | None = None
    """The pod's `logferry.io/rate-limit` annotation, as written (collector.ratelimit)."""


def readable(parse: Callable[..., T | None], resource: str, obj: Any, *args: Any) -> T | None:
    """`parse(obj, *args)`, or None, counted and logged, for an object with fields of the
    wrong type: an API server validates what it stores, but what a proxy or an aggregated
    API sends is not; one such object must not stop the list or the watch for all others."""
    try:
        return parse(obj, *args)
    except (AttributeError, TypeError, ValueError) as exc:
        UNREADABLE.labels(resource).inc()
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        name = meta.get("name") if isinstance(meta, dict) else None
        log.warning("kubernetes API: %s object %r skipped, not readable: %r", resource, name, exc)
        return None


def split_container_id(value: str) -> tuple[str, str | None]:
    """`containerd://abc` -> (`abc`, `containerd`); a bare id -> (id, None)."""
    runtime, sep, rest = value.partition("://")
    return (rest, runtime) if sep else (value, None)


def flag(value: object) -> bool:
    return isinstance(value, str) and value.strip().lower() == "true"


def wanted(key: str, globs: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, g) for g in globs)


def owner_fields(meta: Mapping[str, Any], labels: Mapping[str, str]) -> dict[str, str]:
    """The workload behind a pod, from its controller reference alone (no GET of the owner)."""
    refs = [r for r in meta.get("ownerReferences") or [] if isinstance(r, dict)]
    ref = next((r for r in refs if r.get("controller")), refs[0] if refs else None)
    if ref is None or not isinstance(ref.get("name"), str):
        return {}
    kind, name = ref.get("kind"), ref["name"]
    if kind == "ReplicaSet":
        out = {"kubernetes.replicaset.name": name}
        suffix = labels.get("pod-template-hash")
        if suffix and name.endswith(f"-{suffix}"):
            out["kubernetes.deployment.name"] = name[: -len(suffix) - 1]
        return out
    if kind == "StatefulSet":
        return {"kubernetes.statefulset.name": name}
    if kind == "DaemonSet":
        return {"kubernetes.daemonset.name": name}
    if kind == "Job":
        out = {"kubernetes.job.name": name}
        match = CRONJOB_JOB.match(name)
        if match:
            out["kubernetes.cronjob.name"] = match["cronjob"]
        return out
    return {}


def expired(deleted_at: float | None, cutoff: float) -> bool:
    return deleted_at is not None and deleted_at < cutoff


@dataclass(frozen=True, eq=False, slots=True)
class Namespace:
    name: str
    labels: dict[str, str]
    excluded: bool
    deleted_at: float | None

    @classmethod
    def parse(cls, obj: Mapping[str, Any], deleted_at: float | None) -> Namespace | None:
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        if not isinstance(name, str):
            return None
        annotations = meta.get("annotations") or {}
        return cls(name, dict(meta.get("labels") or {}), flag(annotations.get(EXCLUDE)), deleted_at)


@dataclass(frozen=True, eq=False, slots=True)
class Pod:
    uid: str
    namespace: str
    name: str
    mirror: str | None
    base: dict[str, Any]
    """The fields every container of the pod shares."""
    images: dict[str, str]
    only_container: str | None
    """The container a file with no container name can only belong to."""
    current: dict[str, str]
    """Container name -> id of its current run."""
    ids: dict[str, str]
    """Container id (current and previous run) -> container name."""
    runtime: str | None
    annotations: dict[str, str]
    excluded: bool
    exclude_containers: frozenset[str]
    deleted_at: float | None
    finished: bool
    """Succeeded or Failed: Kubernetes keeps its status.podIP, which may be another pod's."""
    infos: dict[tuple[str | None, str | None], tuple[Namespace | None, PodInfo]] = field(
        default_factory=dict
    )

    @classmethod
    def parse(
        cls, obj: Mapping[str, Any], include: list[str] | None, deleted_at: float | None
    ) -> Pod | None:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        uid, namespace, name = meta.get("uid"), meta.get("namespace"), meta.get("name")
        if not (isinstance(uid, str) and isinstance(namespace, str) and isinstance(name, str)):
            return None
        labels: dict[str, str] = dict(meta.get("labels") or {})
        annotations: dict[str, str] = dict(meta.get("annotations") or {})
        base: dict[str, Any] = {
            "kubernetes.namespace": namespace,
            "kubernetes.pod.name": name,
            "kubernetes.pod.uid": uid,
        }
        if status.get("podIP"):
            base["kubernetes.pod.ip"] = status["podIP"]
        if spec.get("nodeName"):
            base["kubernetes.node.name"] = spec["nodeName"]
        if labels:
            base["kubernetes.labels"] = labels
        kept = annotations
        if include is not None:
            kept = {k: v for k, v in annotations.items() if wanted(k, include)}
        if kept:
            base["kubernetes.annotations"] = kept
        base.update(owner_fields(meta, labels))

        images: dict[str, str] = {}
        for group in SPEC_GROUPS:
            for container in spec.get(group) or []:
                if isinstance(container.get("name"), str) and container.get("image"):
                    images[container["name"]] = container["image"]
        main = [c.get("name") for c in spec.get("containers") or []]
        current: dict[str, str] = {}
        ids: dict[str, str] = {}
        runtime = None
        for group in STATUS_GROUPS:
            for st in status.get(group) or []:
                cname = st.get("name")
                if not isinstance(cname, str):
                    continue
                if st.get("image"):
                    images.setdefault(cname, st["image"])
                previous = ((st.get("lastState") or {}).get("terminated") or {}).get("containerID")
                if previous:
                    ids[split_container_id(previous)[0]] = cname
                if st.get("containerID"):
                    cid, runtime = split_container_id(st["containerID"])
                    current[cname] = cid
                    ids[cid] = cname
        excluded_names = annotations.get(EXCLUDE_CONTAINERS) or ""
        return cls(
            uid=uid,
            namespace=namespace,
            name=name,
            mirror=annotations.get(MIRROR),
            base=base,
            images=images,
            only_container=main[0] if len(main) == 1 else None,
            current=current,
            ids=ids,
            runtime=runtime,
            annotations=annotations,
            excluded=flag(annotations.get(EXCLUDE)),
            exclude_containers=frozenset(n.strip() for n in excluded_names.split(",") if n.strip()),
            deleted_at=deleted_at,
            finished=status.get("phase") in FINISHED,
        )

    def info(self, namespace: Namespace | None, cname: str | None, cid: str | None) -> PodInfo:
        fields = dict(self.base)
        if namespace is not None and namespace.labels:
            fields["kubernetes.namespace_labels"] = namespace.labels
        if cname is not None:
            fields["kubernetes.container.name"] = cname
            if cname in self.images:
                fields["container.image.name"] = self.images[cname]
            # A file of an older run names its own id; only a file that names none (CRI paths)
            # gets the current run's.
            cid = cid or self.current.get(cname)
        if cid:
            fields["container.id"] = cid
        if self.runtime:
            fields["container.runtime"] = self.runtime
        multiline = None
        if cname is not None:
            multiline = self.annotations.get(f"{MULTILINE}.{cname}")
        multiline = multiline or self.annotations.get(MULTILINE)
        # Not stripped: a regex may end in a meaningful space.
        if multiline is not None and not multiline.strip():
            multiline = None
        parser = self.annotations.get(f"{PARSER}.{cname}") if cname is not None else None
        parser = parser or self.annotations.get(PARSER)
        excluded = (
            self.excluded
            or (namespace is not None and namespace.excluded)
            or (cname is not None and cname in self.exclude_containers)
        )
        return PodInfo(fields, excluded, multiline, parser, self.annotations.get(RATE_LIMIT))


class Enricher:
    """The node's pods and the cluster's namespaces, kept current by watches.

    Thread-safe. `lookup` takes no lock: a few dict reads, and a memoised PodInfo.
    """

    def __init__(
        self,
        node_name: str,
        *,
        grace: float = 60.0,
        annotations: list[str] | None = None,
        kubeconfig: str | None = None,
        backoff_max: float = 30.0,
    ) -> None:
        if not node_name:
            raise ValueError("node_name is required: only this node's pods are watched")
        self.node_name = node_name
        self.grace = grace
        self.annotations = annotations
        self.kubeconfig = kubeconfig
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pods: dict[str, Pod] = {}
        self._by_name: dict[tuple[str, str], str] = {}
        self._by_id: dict[str, tuple[str, str]] = {}
        """Container id -> (pod uid, container name)."""
        self._namespaces: dict[str, Namespace] = {}
        self._version = 0
        self._up = {"pods": False, "namespaces": False}
        self._listed: set[str] = set()
        self._failing: set[str] = set()
        """Resources whose last attempt failed (their watch is not up)."""
        self._answered: float | None = None
        self._complaints: set[str] = set()
        """Kinds of failure logged during the current outage, so each is logged once."""
        self._client_lock = threading.Lock()
        self._client: client.ApiClient | None = None
        self._core: client.CoreV1Api | None = None
        self._reflectors = [
            Reflector(
                "pods",
                self._call_pods,
                replace=self._replace_pods,
                event=self._pod_event,
                state=self._state,
                restarts=WATCH_RESTARTS.labels("pods"),
                relists=RELISTS.labels("pods"),
                backoff_max=backoff_max,
                stop=self._stop,
            ),
            Reflector(
                "namespaces",
                self._call_namespaces,
                replace=self._replace_namespaces,
                event=self._namespace_event,
                state=self._state,
                restarts=WATCH_RESTARTS.labels("namespaces"),
                relists=RELISTS.labels("namespaces"),
                backoff_max=backoff_max,
                stop=self._stop,
            ),
        ]
        self._janitor = threading.Thread(target=self._sweep, name="enrich-janitor", daemon=True)

    def start(self) -> None:
        for reflector in self._reflectors:
            reflector.thread.start()
        self._janitor.start()

    def stop(self) -> None:
        self._stop.set()
        for reflector in self._reflectors:
            reflector.interrupt()
        for thread in (*(r.thread for r in self._reflectors), self._janitor):
            if thread.is_alive():
                thread.join(timeout=2.0)
        with self._client_lock:
            if self._client is not None:
                self._client.close()

    @property
    def version(self) -> int:
        return self._version

    @property
    def available(self) -> bool:
        return all(self._up.values())

    @property
    def synced(self) -> bool:
        return len(self._listed) == len(self._up)

    @property
    def answered_at(self) -> float | None:
        """When the API first answered (time.monotonic()): both kinds listed, or an attempt
        failed. None while the first lists are still in flight: until then a pod unknown
        here may well be known there, so records wait (collector.annotate)."""
        return self._answered

    def pods_by_address(self) -> dict[str, dict[str, str]]:
        """Live pods by IP, as `lookup` metadata; an address two pods share (host network)
        is left out, since its peer cannot be told apart. Built per call: callers keep it
        until `version` changes."""
        with self._lock:
            pods = [p for p in self._pods.values() if p.deleted_at is None and not p.finished]
        found: dict[str, dict[str, str] | None] = {}
        for pod in pods:
            address = pod.base.get("kubernetes.pod.ip")
            if not address:
                continue
            found[address] = (
                None
                if address in found
                else {
                    "kubernetes.pod.uid": pod.uid,
                    "kubernetes.namespace": pod.namespace,
                    "kubernetes.pod.name": pod.name,
                }
            )
        return {a: meta for a, meta in found.items() if meta is not None}

    def lookup(self, meta: Mapping[str, Any]) -> PodInfo | None:
        cid = meta.get("container.id")
        cid = split_container_id(cid)[0] if cid else None
        cname: str | None = meta.get("kubernetes.container.name")
        pod = None
        if cid:
            hit = self._by_id.get(cid)
            if hit is not None:
                pod = self._pods.get(hit[0])
                cname = hit[1]
        uid = meta.get("kubernetes.pod.uid")
        if pod is None and uid:
            pod = self._pods.get(uid)
        namespace_name, pod_name = meta.get("kubernetes.namespace"), meta.get("kubernetes.pod.name")
        if pod is None and namespace_name and pod_name:
            named = self._pods.get(self._by_name.get((namespace_name, pod_name), ""))
            # A pod of the same name with another uid is another pod (a StatefulSet's pod
            # recreated), unless it is the mirror of the static pod the path names.
            if named is not None and (not uid or named.mirror == uid):
                pod = named
        if pod is None:
            return None
        # Until namespaces are listed a pod's record would lack its namespace labels for
        # good: the caller waits (bounded by its metadata wait), unless that list is failing.
        if "namespaces" not in self._listed and "namespaces" not in self._failing:
            return None
        if pod.deleted_at is not None and time.monotonic() - pod.deleted_at > self.grace:
            return None
        if cname is None:
            cname = pod.only_container
        namespace = self._namespaces.get(pod.namespace)
        memo = pod.infos.get((cname, cid))
        if memo is not None and memo[0] is namespace:
            return memo[1]
        info = pod.info(namespace, cname, cid)
        pod.infos[(cname, cid)] = (namespace, info)
        return info

    def configure(self) -> None:
        """Builds the API client now instead of at the first list; contacts no server.
        Raises ConfigException: no credentials, or a kubeconfig that cannot be used."""
        self._api()

    def _api(self) -> client.CoreV1Api:
        with self._client_lock:
            if self._core is None:
                self._client = api_client(self.kubeconfig)
                self._core = client.CoreV1Api(self._client)
            return self._core

    def _call_pods(self, **kwargs: Any) -> HTTPResponse:
        return self._api().list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={self.node_name}", _preload_content=False, **kwargs
        )

    def _call_namespaces(self, **kwargs: Any) -> HTTPResponse:
        return self._api().list_namespace(_preload_content=False, **kwargs)

    def _state(self, resource: str, ok: bool, exc: BaseException | None) -> None:
        kind, text = describe(exc) if exc is not None else ("", "")
        with self._lock:
            self._up[resource] = ok
            failing = set(self._failing)
            if ok:
                self._failing.discard(resource)
            else:
                self._failing.add(resource)
                self._answer()
            if self._failing != failing:
                # What a lookup returns depends on it (a failing namespaces list is not
                # waited for): callers look again.
                self._changed()
            recovered = ok and bool(self._complaints) and all(self._up.values())
            first = not ok and kind not in self._complaints
            if recovered:
                self._complaints.clear()
            elif not ok:
                self._complaints.add(kind)
        if recovered:
            log.info("kubernetes API reachable again: pod metadata is back")
        elif first:
            log.warning(
                "kubernetes API: cannot watch %s (%s); records go without pod metadata until "
                "it answers; retrying",
                resource,
                text,
            )
        elif not ok:
            log.debug("kubernetes API still unavailable for %s: %s", resource, text)

    def _changed(self) -> None:
        """Called with the lock held after any change."""
        self._version += 1
        CACHE_PODS.set(len(self._pods))

    def _answer(self) -> None:
        """Called with the lock held when a list came or an attempt failed."""
        if self._answered is None and (self.synced or self._failing):
            self._answered = time.monotonic()
            # Operators (and the end-to-end tests) learn when waiting records may go.
            log.info(
                "kubernetes API answered: %d pods, %d namespaces%s",
                len(self._pods),
                len(self._namespaces),
                f"; failing: {', '.join(sorted(self._failing))}" if self._failing else "",
            )

    def _replace_pods(self, items: list[dict[str, Any]]) -> None:
        fresh: dict[str, Pod] = {}
        for obj in items:
            pod = readable(Pod.parse, "pods", obj, self.annotations, None)
            if pod is not None:
                fresh[pod.uid] = pod
        with self._lock:
            for uid, old in self._pods.items():
                if old.deleted_at is not None and uid not in fresh:
                    fresh[uid] = old
            by_name: dict[tuple[str, str], str] = {}
            by_id: dict[str, tuple[str, str]] = {}
            # Deleted pods first, so that a live pod of the same name wins the name.
            for pod in sorted(fresh.values(), key=lambda p: p.deleted_at is None):
                by_name[(pod.namespace, pod.name)] = pod.uid
                for cid, cname in pod.ids.items():
                    by_id[cid] = (pod.uid, cname)
            self._pods, self._by_name, self._by_id = fresh, by_name, by_id
            self._listed.add("pods")
            self._answer()
            self._changed()

    def _pod_event(self, kind: str, obj: dict[str, Any]) -> None:
        deleted_at = time.monotonic() if kind == "DELETED" else None
        pod = readable(Pod.parse, "pods", obj, self.annotations, deleted_at)
        if pod is None:
            return
        with self._lock:
            old = self._pods.get(pod.uid)
            if old is not None:
                for cid in old.ids.keys() - pod.ids.keys():
                    if self._by_id.get(cid, ("",))[0] == pod.uid:
                        del self._by_id[cid]
            self._pods[pod.uid] = pod
            key = (pod.namespace, pod.name)
            if deleted_at is None or self._by_name.get(key, pod.uid) == pod.uid:
                self._by_name[key] = pod.uid
            for cid, cname in pod.ids.items():
                self._by_id[cid] = (pod.uid, cname)
            self._changed()

    def _replace_namespaces(self, items: list[dict[str, Any]]) -> None:
        fresh: dict[str, Namespace] = {}
        for obj in items:
            namespace = readable(Namespace.parse, "namespaces", obj, None)
            if namespace is not None:
                fresh[namespace.name] = namespace
        with self._lock:
            for name, old in self._namespaces.items():
                if old.deleted_at is not None and name not in fresh:
                    fresh[name] = old
            self._namespaces = fresh
            self._listed.add("namespaces")
            self._answer()
            self._changed()

    def _namespace_event(self, kind: str, obj: dict[str, Any]) -> None:
        deleted_at = time.monotonic() if kind == "DELETED" else None
        namespace = readable(Namespace.parse, "namespaces", obj, deleted_at)
        if namespace is None:
            return
        with self._lock:
            self._namespaces[namespace.name] = namespace
            self._changed()

    def _sweep(self) -> None:
        interval = min(max(self.grace / 4, 0.05), 5.0)
        while not self._stop.wait(interval):
            self._purge(time.monotonic() - self.grace)

    def _purge(self, cutoff: float) -> None:
        with self._lock:
            pods = [p for p in self._pods.values() if expired(p.deleted_at, cutoff)]
            names = [n.name for n in self._namespaces.values() if expired(n.deleted_at, cutoff)]
            for pod in pods:
                del self._pods[pod.uid]
                if self._by_name.get((pod.namespace, pod.name)) == pod.uid:
                    del self._by_name[(pod.namespace, pod.name)]
                for cid in pod.ids:
                    if self._by_id.get(cid, ("",))[0] == pod.uid:
                        del self._by_id[cid]
            for name in names:
                del self._namespaces[name]
            if pods or names:
                self._changed()
