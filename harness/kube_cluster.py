"""Driving the real kube-apiserver of deploy/local/kube.sh as a cluster's controllers would.

A bare API server has no scheduler, kubelet or controller-manager, so this does their part:
each namespace gets its `default` ServiceAccount (the ServiceAccount admission refuses pods
without it), pods are created already bound (`spec.nodeName`) and their status (container ids,
IP) is written through the status subresource as a kubelet does. Namespaces never finish
deleting (no namespace controller): tests delete what is inside instead.

Also: ServiceAccount tokens from the TokenRequest API, etcd's revision and compaction (through
etcd's JSON gateway), and the requests the API server saw, from its audit log.
"""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kubernetes import client, config

REPO = Path(__file__).resolve().parents[1]
RBAC = REPO / "deploy" / "kubernetes" / "base" / "rbac.yaml"
COLLECTOR_USER = "system:serviceaccount:logging:logferry-collector"
"""Who the API server sees when the collector uses its ServiceAccount's token."""
CONTAINERD = "containerd://"
WAIT = 120.0
"""Bound of every wait on the server or a watch: generous, the machine is shared."""


def admin_client(kubeconfig: Path) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(kubeconfig))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_namespace(core: client.CoreV1Api, name: str, labels: dict[str, str]) -> None:
    """A namespace and its `default` ServiceAccount (the controller-manager's job)."""
    core.create_namespace({"metadata": {"name": name, "labels": labels}})
    core.create_namespaced_service_account(name, {"metadata": {"name": "default"}})


def container_id(uid: str, container: str, restart: int = 0) -> str:
    return hashlib.sha256(f"{uid}/{container}/{restart}".encode()).hexdigest()


def owner(kind: str, obj: Any) -> dict[str, Any]:
    """A controller reference to `obj` (a created ReplicaSet, StatefulSet... as returned)."""
    meta = obj["metadata"] if isinstance(obj, dict) else obj.metadata
    get = meta.get if isinstance(meta, dict) else lambda key: getattr(meta, key)
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "name": get("name"),
        "uid": get("uid"),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def pod_manifest(
    name: str,
    node: str,
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    owners: list[dict[str, Any]] | None = None,
    containers: Iterable[str] = ("app",),
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": labels or {},
            "annotations": annotations or {},
            "ownerReferences": owners or [],
        },
        "spec": {
            "nodeName": node,
            "containers": [{"name": c, "image": f"registry.local/{c}:1.0"} for c in containers],
        },
    }


def create_pod(core: client.CoreV1Api, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """Creates the pod and, as its kubelet would, reports it running (status subresource).
    Returns the pod as the server has it (a dict, uid included)."""
    created = core.create_namespaced_pod(namespace, manifest, _preload_content=False)
    pod = json.loads(created.data)
    set_running(core, pod)
    return pod


def set_running(core: client.CoreV1Api, pod: dict[str, Any], restart: int = 0) -> None:
    meta = pod["metadata"]
    uid = meta["uid"]
    digest = hashlib.sha256(uid.encode()).digest()
    address = f"10.{100 + digest[0] % 100}.{digest[1]}.{digest[2] % 250 + 2}"
    statuses = [
        {
            "name": c["name"],
            "image": c["image"],
            "imageID": f"{c['image']}@sha256:{'0' * 64}",
            "containerID": CONTAINERD + container_id(uid, c["name"], restart),
            "ready": True,
            "restartCount": restart,
            "started": True,
            "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
        }
        for c in pod["spec"]["containers"]
    ]
    core.patch_namespaced_pod_status(
        meta["name"],
        meta["namespace"],
        {
            "status": {
                "phase": "Running",
                "podIP": address,
                "podIPs": [{"ip": address}],
                "containerStatuses": statuses,
            }
        },
        _preload_content=False,
    )


def service_account_token(core: client.CoreV1Api, namespace: str, name: str) -> str:
    """A token for the ServiceAccount, from the TokenRequest API (as kubelet mounts one)."""
    request = core.create_namespaced_service_account_token(
        name, namespace, {"spec": {"expirationSeconds": 3600}}
    )
    return str(request.status.token)


def token_kubeconfig(admin_kubeconfig: Path, token: str, path: Path) -> Path:
    """A kubeconfig for the same server as the admin's, authenticated by `token` alone."""
    import yaml

    data = yaml.safe_load(admin_kubeconfig.read_text())
    data["users"] = [{"name": "token", "user": {"token": token}}]
    data["contexts"] = [
        {"name": "token", "context": {"cluster": data["clusters"][0]["name"], "user": "token"}}
    ]
    data["current-context"] = "token"
    path.write_text(yaml.safe_dump(data))
    path.chmod(0o600)
    return path


def etcd_call(etcd_url: str, method: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{etcd_url}/v3/{method}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        result: dict[str, Any] = json.loads(reply.read())
    return result


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def etcd_delete(etcd_url: str, key: str) -> int:
    """Deletes a key behind the API server's back; returns etcd's revision after it."""
    reply = etcd_call(etcd_url, "kv/deleterange", {"key": b64(key)})
    return int(reply["header"]["revision"])


def etcd_compact(etcd_url: str, revision: int) -> None:
    """Drops etcd's history before `revision`: a watch from an older version gets 410 Gone."""
    etcd_call(etcd_url, "kv/compaction", {"revision": str(revision), "physical": True})


class AuditLog:
    """The API server's audit log from a point on: the requests each user made."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.start = path.stat().st_size if path.exists() else 0

    def events(self, username: str) -> list[dict[str, Any]]:
        """One event per request of `username` since this object was made (the last stage
        logged of each), oldest first."""
        latest: dict[str, dict[str, Any]] = {}
        with self.path.open("rb") as log:
            log.seek(self.start)
            for line in log:
                if not line.endswith(b"\n"):
                    break
                event = json.loads(line)
                if (event.get("user") or {}).get("username") == username:
                    latest[event["auditID"]] = event
        return list(latest.values())

    def requests(self, username: str) -> Counter[tuple[str, str]]:
        """(verb, resource[/subresource]) -> how many requests `username` made."""
        counts: Counter[tuple[str, str]] = Counter()
        for event in self.events(username):
            ref = event.get("objectRef") or {}
            resource = ref.get("resource", event.get("requestURI", ""))
            if ref.get("subresource"):
                resource += "/" + ref["subresource"]
            counts[(event["verb"], resource)] += 1
        return counts
