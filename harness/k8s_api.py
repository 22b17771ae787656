"""A stand-in for the Kubernetes API server, for unit tests and benchmarks.

The real one (deploy/local/kube.sh) is what tests/integration/test_kube_*.py use; this stand-in
stays for what a real server cannot produce on demand or within a unit test's budget: a watch
dropped or expired at a chosen moment, 403 switched on and off, the server gone and back in
milliseconds, one list answered long after another (`hold`), exact request counts without an
audit log, and no build. It is a small `ThreadingHTTPServer` on 127.0.0.1
that speaks the API server's wire format for pods and namespaces to the real `kubernetes`
client: list bodies (`PodList`/`NamespaceList` with `metadata.resourceVersion`), watches as a
chunked stream of newline-delimited JSON events (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR)
from a resourceVersion, `fieldSelector` on `spec.nodeName`/`metadata.name`/
`metadata.namespace`/`status.phase`, bearer-token authentication, and the failures a client
must survive: a watch expired mid-stream (an ERROR event holding a 410 `Status`), a watch asked
for a compacted resourceVersion (an HTTP 410 reply), 403 Forbidden, and the server going down
and coming back on the same port. It counts requests by verb and path so a test can assert
that a client made one list and one watch and never a GET per pod.

It keeps every object in memory and its event history until `compact()`; it is not a
conformance implementation (no label selectors, no pagination, no writes over HTTP).
"""

from __future__ import annotations

import bisect
import contextlib
import copy
import hashlib
import re
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import yaml

ROUTES = [
    (re.compile(r"^/api/v1/pods$"), "pods", False),
    (re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods$"), "pods", False),
    (re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<name>[^/]+)$"), "pods", True),
    (re.compile(r"^/api/v1/namespaces$"), "namespaces", False),
    (re.compile(r"^/api/v1/namespaces/(?P<name>[^/]+)$"), "namespaces", True),
]
KINDS = {"Pod": "pods", "Namespace": "namespaces"}
LIST_KINDS = {"pods": "PodList", "namespaces": "NamespaceList"}
ITEM_KINDS = {"pods": "Pod", "namespaces": "Namespace"}
SELECTABLE = {"spec.nodeName", "metadata.name", "metadata.namespace", "status.phase"}


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def container_id(uid: str, container: str, restart: int = 0) -> str:
    return hashlib.sha256(f"{uid}/{container}/{restart}".encode()).hexdigest()


def pod(
    name: str,
    namespace: str = "default",
    *,
    node: str = "node-a",
    uid: str | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    containers: Iterable[str] = ("app",),
    init_containers: Iterable[str] = (),
    image: str = "registry.example/app:1.2",
    owner: tuple[str, str] | None = None,
    ip: str = "10.244.1.7",
    runtime: str = "containerd",
    restarts: int = 0,
) -> dict[str, Any]:
    """A Pod as the API server returns it, scheduled and running.

    `owner` is (kind, name) of the controller; a ReplicaSet's `<deployment>-<hash>` name also
    sets the `pod-template-hash` label, as the Deployment controller does. A container with
    `restarts` > 0 has its previous run's id in `lastState.terminated`.
    """
    uid = uid or str(uuid.uuid4())
    labels = dict(labels or {})
    references = []
    if owner is not None:
        kind, owner_name = owner
        if kind == "ReplicaSet" and "-" in owner_name:
            labels.setdefault("pod-template-hash", owner_name.rsplit("-", 1)[1])
        references.append(
            {
                "apiVersion": "batch/v1" if kind == "Job" else "apps/v1",
                "kind": kind,
                "name": owner_name,
                "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{kind}/{namespace}/{owner_name}")),
                "controller": True,
                "blockOwnerDeletion": True,
            }
        )

    def spec_of(names: Iterable[str]) -> list[dict[str, Any]]:
        return [
            {
                "name": n,
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "resources": {},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
            }
            for n in names
        ]

    def status_of(names: Iterable[str], *, init: bool) -> list[dict[str, Any]]:
        out = []
        for n in names:
            entry: dict[str, Any] = {
                "name": n,
                "containerID": f"{runtime}://{container_id(uid, n, restarts)}",
                "image": f"docker.io/{image}" if "/" not in image.split(":")[0] else image,
                "imageID": f"{image}@sha256:{hashlib.sha256(image.encode()).hexdigest()}",
                "ready": not init,
                "restartCount": restarts,
                "started": not init,
                "lastState": {},
                "state": (
                    {"terminated": {"exitCode": 0, "reason": "Completed"}}
                    if init
                    else {"running": {"startedAt": now_rfc3339()}}
                ),
            }
            if restarts:
                entry["lastState"] = {
                    "terminated": {
                        "exitCode": 1,
                        "reason": "Error",
                        "containerID": f"{runtime}://{container_id(uid, n, restarts - 1)}",
                    }
                }
            out.append(entry)
        return out

    containers, init_containers = list(containers), list(init_containers)
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": uid,
        "creationTimestamp": now_rfc3339(),
        "labels": labels,
        "annotations": dict(annotations or {}),
    }
    if references:
        metadata["ownerReferences"] = references
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": metadata,
        "spec": {
            "nodeName": node,
            "containers": spec_of(containers),
            "initContainers": spec_of(init_containers),
            "restartPolicy": "Always",
            "serviceAccountName": "default",
        },
        "status": {
            "phase": "Running",
            "hostIP": "192.168.1.10",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": now_rfc3339(),
            "containerStatuses": status_of(containers, init=False),
            "initContainerStatuses": status_of(init_containers, init=True),
        },
    }


def namespace(
    name: str, *, labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"namespace/{name}")),
            "creationTimestamp": now_rfc3339(),
            "labels": {"kubernetes.io/metadata.name": name, **(labels or {})},
            "annotations": dict(annotations or {}),
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def cid(obj: dict[str, Any], container: str = "app") -> str:
    """The bare id of a pod's container, as in Docker and CRI log paths."""
    for group in ("containerStatuses", "initContainerStatuses"):
        for st in obj["status"].get(group) or []:
            if st["name"] == container:
                return st["containerID"].split("://", 1)[1]
    raise KeyError(container)


def field(obj: dict[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return "" if node is None else str(node)


def parse_selector(text: str) -> list[tuple[str, bool, str]]:
    """`a=b,c!=d` -> [(a, True, b), (c, False, d)]; raises ValueError on an unknown field."""
    terms = []
    for term in filter(None, text.split(",")):
        match = re.match(r"^([\w.]+)(!=|==|=)(.*)$", term)
        if match is None or match[1] not in SELECTABLE:
            raise ValueError(f'"{term}" is not a known field selector')
        terms.append((match[1], match[2] != "!=", match[3]))
    return terms


class Watcher:
    """One open watch stream, so the server can end or expire it."""

    def __init__(self, resource: str) -> None:
        self.resource = resource
        self.expired = False
        self.dropped = False


class KubeAPI:
    """The stand-in server. Not listening until `up()`; usable as a context manager."""

    def __init__(self, *, token: str = "logferry-test-token", bookmark_every: float = 1.0) -> None:
        self.token = token
        self.bookmark_every = bookmark_every
        self.cond = threading.Condition()
        self.rv = 1000
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {
            "pods": {},
            "namespaces": {},
        }
        self.events: list[tuple[int, str, str, dict[str, Any]]] = []
        """(resourceVersion, resource, type, object) since the last compaction."""
        self.dropped = 0
        """Events compacted away so far."""
        self.compacted_rv = self.rv
        """A watch from a version older than this answers 410 Gone."""
        self.watchers: set[Watcher] = set()
        self.connections: set[socket.socket] = set()
        self.requests: Counter[str] = Counter()
        """`<verb> <path>` -> count; verb is list, watch or get."""
        self.log: list[tuple[str, dict[str, str]]] = []
        """(`<verb> <path>`, query) of every request, in order."""
        self.bookmarks: list[tuple[str, int]] = []
        """(resource, resourceVersion) of every BOOKMARK event sent."""
        self.forbidden = False
        self.held: set[str] = set()
        """Resources whose lists wait until `release`: one list answered long after another,
        which a real API server cannot be made to do on demand."""
        self.serving = False
        self.server = self._bind(0)
        self.port: int = self.server.server_address[1]
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> KubeAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def _bind(self, port: int) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", port), Handler, bind_and_activate=False)
        server.daemon_threads = True
        server.allow_reuse_address = True
        server.server_bind()
        server.api = self  # type: ignore[attr-defined]
        return server

    def up(self) -> KubeAPI:
        """Start answering (again, on the same port)."""
        if self.serving:
            return self
        if self.server is None:
            self.server = self._bind(self.port)
        self.server.server_activate()
        self.serving = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        return self

    def down(self) -> None:
        """Stop answering: connections are refused and open ones (watches too) are cut."""
        if self.server is None:
            return
        with self.cond:
            self.serving = False
            for watcher in self.watchers:
                watcher.dropped = True
            self.cond.notify_all()
        if self.thread is not None:
            self.server.shutdown()
            self.thread = None
        self.server.server_close()
        self.server = None
        with self.cond:
            for conn in list(self.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def kubeconfig(self, path: Path | str) -> str:
        """Write a kubeconfig that points the real client at this server; returns the path."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "stand-in", "cluster": {"server": self.url}}],
            "users": [{"name": "logferry", "user": {"token": self.token}}],
            "contexts": [
                {"name": "stand-in", "context": {"cluster": "stand-in", "user": "logferry"}}
            ],
            "current-context": "stand-in",
        }
        Path(path).write_text(yaml.safe_dump(config))
        return str(path)

    def add(self, obj: dict[str, Any]) -> int:
        return self._change("ADDED", obj)

    def modify(self, obj: dict[str, Any]) -> int:
        return self._change("MODIFIED", obj)

    def delete(self, obj: dict[str, Any]) -> int:
        return self._change("DELETED", obj)

    def _change(self, kind: str, obj: dict[str, Any]) -> int:
        resource = KINDS[obj["kind"]]
        stored = copy.deepcopy(obj)
        key = (stored["metadata"].get("namespace", ""), stored["metadata"]["name"])
        with self.cond:
            if (kind == "ADDED") == (key in self.objects[resource]):
                raise KeyError(f"{kind} {resource} {key}: already there or not there")
            self.rv += 1
            stored["metadata"]["resourceVersion"] = str(self.rv)
            if kind == "DELETED":
                stored["metadata"]["deletionTimestamp"] = now_rfc3339()
                del self.objects[resource][key]
            else:
                self.objects[resource][key] = stored
            self.events.append((self.rv, resource, kind, stored))
            self.cond.notify_all()
            return self.rv

    def hold(self, resource: str) -> None:
        with self.cond:
            self.held.add(resource)

    def release(self, resource: str) -> None:
        with self.cond:
            self.held.discard(resource)
            self.cond.notify_all()

    def compact(self) -> None:
        """Forget the event history, as etcd compaction does: older versions answer 410."""
        with self.cond:
            self.dropped += len(self.events)
            self.events.clear()
            self.compacted_rv = self.rv
            self.cond.notify_all()

    def expire(self, resource: str | None = None) -> None:
        """Compact, and end every open watch (of `resource`) with an ERROR 410 event: the
        watch cache's way of saying the history a watcher needs is gone."""
        with self.cond:
            for watcher in self.watchers:
                if resource in (None, watcher.resource):
                    watcher.expired = True
        self.compact()

    def drop_watches(self) -> None:
        """Cut the open watch connections without a word, as a restarting server or a load
        balancer does; the history stays, so a client can resume."""
        with self.cond:
            for watcher in self.watchers:
                watcher.dropped = True
            self.cond.notify_all()

    def open_watches(self, resource: str | None = None) -> int:
        with self.cond:
            return sum(resource in (None, w.resource) for w in self.watchers)

    def count(self, verb: str, path: str | None = None) -> int:
        """Requests of one verb (list, watch, get), on one path or on all."""
        return sum(
            n
            for key, n in self.requests.items()
            if key.split(" ", 1)[0] == verb and path in (None, key.split(" ", 1)[1])
        )

    def matching(
        self, resource: str, ns: str | None, selector: list[tuple[str, bool, str]]
    ) -> list[dict[str, Any]]:
        with self.cond:
            return [o for o in self.objects[resource].values() if selected(o, ns, selector)]


def selected(obj: dict[str, Any], ns: str | None, selector: list[tuple[str, bool, str]]) -> bool:
    if ns is not None and obj["metadata"].get("namespace") != ns:
        return False
    return all((field(obj, path) == value) == equal for path, equal, value in selector)


def route(path: str) -> tuple[dict[str, str], str, bool] | None:
    for pattern, resource, single in ROUTES:
        match = pattern.match(path)
        if match:
            return match.groupdict(), resource, single
    return None


def item(obj: dict[str, Any]) -> dict[str, Any]:
    """List items carry no kind or apiVersion; the list does."""
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kube-apiserver-stand-in"

    @property
    def api(self) -> KubeAPI:
        return self.server.api  # type: ignore[attr-defined]

    def setup(self) -> None:
        super().setup()
        with self.api.cond:
            self.api.connections.add(self.connection)

    def finish(self) -> None:
        with self.api.cond:
            self.api.connections.discard(self.connection)
        # The client (or `down()`) may have cut the connection already.
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send_json(self, code: int, body: dict[str, Any]) -> None:
        data = orjson.dumps(body)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        api = self.api
        if not api.serving:
            self.close_connection = True
            return
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        found = route(url.path)
        if found is None:
            self.send_json(404, status(404, "NotFound", f"the server could not find {url.path}"))
            return
        groups, resource, single = found
        watching = query.get("watch") in ("true", "1")
        verb = "get" if single else "watch" if watching else "list"
        with api.cond:
            api.requests[f"{verb} {url.path}"] += 1
            api.log.append((f"{verb} {url.path}", query))
        if self.headers.get("Authorization") != f"Bearer {api.token}":
            self.send_json(401, status(401, "Unauthorized", "Unauthorized"))
            return
        if api.forbidden:
            self.send_json(
                403,
                status(
                    403,
                    "Forbidden",
                    f'{resource} is forbidden: User "system:serviceaccount:logging:logferry" '
                    f'cannot {verb} resource "{resource}" in API group "" at the cluster scope',
                ),
            )
            return
        if single:
            key = (groups["ns"], groups["name"]) if resource == "pods" else ("", groups["name"])
            with api.cond:
                obj = api.objects[resource].get(key)
            if obj is None:
                self.send_json(404, status(404, "NotFound", f'{resource} "{key[1]}" not found'))
            else:
                self.send_json(200, obj)
            return
        try:
            selector = parse_selector(query.get("fieldSelector", ""))
        except ValueError as exc:
            self.send_json(400, status(400, "BadRequest", str(exc)))
            return
        ns = groups.get("ns")
        if watching:
            self.watch(resource, ns, selector, query)
            return
        with api.cond:
            api.cond.wait_for(lambda: resource not in api.held or not api.serving, timeout=120)
            items = [item(o) for o in api.matching(resource, ns, selector)]
            rv = api.rv
        self.send_json(
            200,
            {
                "kind": LIST_KINDS[resource],
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(rv)},
                "items": items,
            },
        )

    def chunk(self, events: list[dict[str, Any]]) -> None:
        data = b"".join(orjson.dumps(e) + b"\n" for e in events)
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def watch(
        self,
        resource: str,
        ns: str | None,
        selector: list[tuple[str, bool, str]],
        query: dict[str, str],
    ) -> None:
        api = self.api
        since = query.get("resourceVersion", "")
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        timeout = float(query.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout
        watcher = Watcher(resource)
        with api.cond:
            if since not in ("", "0") and int(since) < api.compacted_rv:
                self.send_json(
                    410,
                    status(
                        410,
                        "Expired",
                        f"too old resource version: {since} ({api.compacted_rv})",
                    ),
                )
                return
            if since in ("", "0"):
                # "Any" or "most recent": the current state first, as synthetic ADDED events.
                initial = [
                    {"type": "ADDED", "object": o}
                    for o in api.objects[resource].values()
                    if selected(o, ns, selector)
                ]
                position = api.dropped + len(api.events)
            else:
                initial = []
                index = bisect.bisect_right(api.events, int(since), key=lambda e: e[0])
                position = api.dropped + index
            api.watchers.add(watcher)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if initial:
                self.chunk(initial)
            self.stream(watcher, resource, ns, selector, position, deadline, bookmarks)
        except OSError:
            self.close_connection = True
        finally:
            with api.cond:
                api.watchers.discard(watcher)

    def stream(
        self,
        watcher: Watcher,
        resource: str,
        ns: str | None,
        selector: list[tuple[str, bool, str]],
        position: int,
        deadline: float,
        bookmarks: bool,
    ) -> None:
        """`position` counts events since the server started, compacted ones included."""
        api = self.api
        next_bookmark = time.monotonic() + api.bookmark_every
        while True:
            batch: list[tuple[int, str, str, dict[str, Any]]] = []
            bookmark_rv = None
            with api.cond:
                while True:
                    if watcher.dropped:
                        self.close_connection = True
                        return
                    behind = position - api.dropped
                    ending = watcher.expired or behind < 0 or time.monotonic() >= deadline
                    if ending:
                        break
                    if behind < len(api.events):
                        batch = api.events[behind:]
                        position = api.dropped + len(api.events)
                        break
                    now = time.monotonic()
                    if bookmarks and now >= next_bookmark:
                        bookmark_rv = api.rv
                        next_bookmark = now + api.bookmark_every
                        break
                    api.cond.wait(min(deadline, next_bookmark) - now)
                compacted_rv = api.compacted_rv
            if ending:
                if watcher.expired or behind < 0:
                    message = f"too old resource version: ({compacted_rv})"
                    self.chunk([{"type": "ERROR", "object": status(410, "Expired", message)}])
                self.wfile.write(b"0\r\n\r\n")
                return
            events = [
                {"type": kind, "object": obj}
                for _, res, kind, obj in batch
                if res == resource and selected(obj, ns, selector)
            ]
            if bookmark_rv is not None:
                with api.cond:
                    api.bookmarks.append((resource, bookmark_rv))
                meta = {"resourceVersion": str(bookmark_rv)}
                events.append(
                    {
                        "type": "BOOKMARK",
                        "object": {
                            "kind": ITEM_KINDS[resource],
                            "apiVersion": "v1",
                            "metadata": meta,
                        },
                    }
                )
            if events:
                self.chunk(events)
