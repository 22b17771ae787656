"""Finding container log files on the node, and what their paths say about them.

Three layouts are scanned: Docker's json-file folders, the CRI pod tree and the
/var/log/containers symlinks. Each file found is reported once per scan with what its path
(and, for Docker, `config.v2.json`) tells; the agent merges paths that reach the same file.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

ROTATED_DOCKER = re.compile(r"-json\.log\.\d+$")
GZIPPED_DOCKER = re.compile(r"-json\.log\.(\d+)\.gz$")
"""Docker's json-file with `compress`: each rotated file is gzipped, `.1.gz` the newest."""
ROTATED_KUBELET = re.compile(r"\.log\.\d{8}-\d{6}$")
GZIPPED_KUBELET = re.compile(r"\.log\.\d{8}-\d{6}\.gz$")


def docker_named(name: str) -> bool:
    """Whether a file's name is one Docker's json-file gives (`<id>-json.log`, `.1`)."""
    return name.endswith("-json.log") or ROTATED_DOCKER.search(name) is not None


CONTAINER_LINK = re.compile(
    r"^(?P<pod>[^_]+)_(?P<namespace>[^_]+)_(?P<container>.+)-(?P<id>[0-9a-f]{64})\.log$"
)


@dataclass(slots=True)
class Found:
    path: str
    """As discovered (may be a symlink)."""
    real: str
    """The resolved path: its folder groups a container's current and rotated files."""
    dev: int
    ino: int
    size: int
    mtime: float
    rotated: bool
    """A renamed-away file: it no longer grows and is released once read to its end."""
    meta: dict[str, str] = field(default_factory=dict)
    gzipped: bool = False
    """A rotated file kubelet compressed: read only for the rest of a file begun before."""


def docker_config(folder: str) -> dict[str, str]:
    """Names and Kubernetes labels from Docker's config.v2.json; the folder names the id."""
    meta = {"container.runtime": "docker", "container.id": os.path.basename(folder)}
    try:
        with open(os.path.join(folder, "config.v2.json"), "rb") as f:
            config: Any = orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError):
        return meta
    if not isinstance(config, dict):
        return meta
    inner = config.get("Config") if isinstance(config.get("Config"), dict) else {}
    labels = inner.get("Labels") if isinstance(inner.get("Labels"), dict) else {}
    if isinstance(config.get("ID"), str):
        meta["container.id"] = config["ID"]
    if isinstance(config.get("Name"), str):
        meta["container.name"] = config["Name"].lstrip("/")
    if isinstance(inner.get("Image"), str):
        meta["container.image.name"] = inner["Image"]
    for label, key in (
        ("io.kubernetes.pod.namespace", "kubernetes.namespace"),
        ("io.kubernetes.pod.name", "kubernetes.pod.name"),
        ("io.kubernetes.pod.uid", "kubernetes.pod.uid"),
        ("io.kubernetes.container.name", "kubernetes.container.name"),
    ):
        if isinstance(labels.get(label), str):
            meta[key] = labels[label]
    return meta


def pod_folder(name: str) -> dict[str, str]:
    """`<namespace>_<pod>_<uid>`: names and uids cannot hold `_`, so the split is exact."""
    parts = name.split("_")
    if len(parts) != 3:
        return {}
    return {
        "kubernetes.namespace": parts[0],
        "kubernetes.pod.name": parts[1],
        "kubernetes.pod.uid": parts[2],
    }


def container_link(name: str) -> dict[str, str]:
    match = CONTAINER_LINK.match(name)
    if match is None:
        return {}
    return {
        "kubernetes.pod.name": match["pod"],
        "kubernetes.namespace": match["namespace"],
        "kubernetes.container.name": match["container"],
        "container.id": match["id"],
    }


class Discovery:
    """Scans the roots; cheap enough to run every half second on a busy node."""

    def __init__(
        self,
        docker_root: str,
        log_root: str,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
    ) -> None:
        self.docker_root = docker_root
        self.log_root = log_root
        self.include = include or []
        self.exclude = exclude or []
        self.docker_meta: dict[str, dict[str, str]] = {}
        """config.v2.json read once per container folder."""
        self.folders: set[str] = set()
        """The folders the last scan looked in: where a new log file would appear."""

    def wanted(self, path: str) -> bool:
        if self.include and not any(fnmatch.fnmatch(path, g) for g in self.include):
            return False
        return not any(fnmatch.fnmatch(path, g) for g in self.exclude)

    def scan(self) -> list[Found]:
        found: list[Found] = []
        seen_docker: set[str] = set()
        pods, links = os.path.join(self.log_root, "pods"), os.path.join(self.log_root, "containers")
        folders = {self.docker_root, pods, links}
        for folder in subfolders(self.docker_root):
            seen_docker.add(folder)
            folders.add(folder)
            for entry in files(folder):
                name = entry.name
                gzipped = GZIPPED_DOCKER.search(name) is not None
                if docker_named(name) or gzipped:
                    meta = self.docker_meta.get(folder)
                    if meta is None:
                        meta = self.docker_meta[folder] = docker_config(folder)
                    rotated = gzipped or ROTATED_DOCKER.search(name) is not None
                    self.add(found, entry.path, rotated, meta, gzipped=gzipped)
        for gone in set(self.docker_meta) - seen_docker:
            del self.docker_meta[gone]
        for pod in subfolders(pods):
            folders.add(pod)
            pod_meta = pod_folder(os.path.basename(pod))
            for container in subfolders(pod):
                folders.add(container)
                meta = {**pod_meta, "kubernetes.container.name": os.path.basename(container)}
                for entry in files(container):
                    name = entry.name
                    rotated = ROTATED_KUBELET.search(name) is not None
                    if name.endswith(".log") or rotated:
                        self.add(found, entry.path, rotated, meta)
                    elif GZIPPED_KUBELET.search(name):
                        self.add(found, entry.path, True, meta, gzipped=True)
        for entry in files(links):
            if entry.name.endswith(".log"):
                self.add(found, entry.path, False, container_link(entry.name))
        self.folders = folders
        return found

    def add(
        self,
        found: list[Found],
        path: str,
        rotated: bool,
        meta: dict[str, str],
        gzipped: bool = False,
    ) -> None:
        if not self.wanted(path):
            return
        try:
            st = os.stat(path)
            real = os.path.realpath(path) if os.path.islink(path) else path
        except OSError:
            return
        found.append(
            Found(path, real, st.st_dev, st.st_ino, st.st_size, st.st_mtime, rotated, meta, gzipped)
        )


def subfolders(path: str) -> list[str]:
    try:
        with os.scandir(path) as it:
            return sorted(e.path for e in it if e.is_dir())
    except OSError:
        return []


def files(path: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return [e for e in it if not e.is_dir()]
    except OSError:
        return []
