"""Writing container logs the way Docker and kubelet do, and running the agent over them."""

from __future__ import annotations

import os
from collections.abc import Callable
from itertools import count
from pathlib import Path
from typing import Any

import orjson

from collector.agent import Agent
from collector.config import Config, parse
from collector.enrich import Enricher
from collector.sink import Done

CLOCK = count()


def stamp() -> str:
    n = next(CLOCK)
    minute, second, micro = n // 60_000_000 % 60, n // 1_000_000 % 60, n % 1_000_000
    return f"2026-11-27T02:{minute:02d}:{second:02d}.{micro:06d}001Z"


def docker_line(text: str, stream: str = "stdout", newline: bool = True) -> bytes:
    log = text + ("\n" if newline else "")
    return orjson.dumps({"log": log, "stream": stream, "time": stamp()}) + b"\n"


def cri_line(text: str, stream: str = "stdout", tag: str = "F") -> bytes:
    return f"{stamp()} {stream} {tag} {text}\n".encode()


def docker_container(root: Path, cid: str, pod: str = "web-1", ns: str = "default") -> Path:
    folder = root / cid
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "ID": cid,
        "Name": f"/k8s_app_{pod}_{ns}_uid-1_0",
        "Config": {
            "Image": "registry.example/app:1.2",
            "Labels": {
                "io.kubernetes.pod.namespace": ns,
                "io.kubernetes.pod.name": pod,
                "io.kubernetes.pod.uid": "uid-1",
                "io.kubernetes.container.name": "app",
            },
        },
    }
    (folder / "config.v2.json").write_bytes(orjson.dumps(config))
    return folder / f"{cid}-json.log"


def append(path: Path, *lines: bytes) -> None:
    with open(path, "ab") as f:
        f.write(b"".join(lines))


class ListSink:
    """Keeps what the agent sends; acknowledges at once unless told to hold."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.keys: list[str] = []
        self.held: list[Callable[[], None]] = []
        self.hold = False

    def send(self, key: str, values: list[bytes], done: Done) -> None:
        for value in values:
            self.records.append(orjson.loads(value))
            self.keys.append(key)
        if self.hold:
            self.held.append(lambda: done(True))
        else:
            done(True)

    def release(self) -> None:
        for done in self.held:
            done()
        self.held.clear()

    def poll(self, timeout: float) -> None:
        return None

    def flush(self, timeout: float) -> int:
        return len(self.held)

    def close(self) -> None:
        return None

    def messages(self) -> list[str]:
        return [r["message"] for r in self.records]


def settings(tmp: Path, *flags: str) -> Config:
    """The collector's settings for a node whose roots and state are under `tmp`."""
    return parse(
        [
            "--sink",
            "stdout",
            "--docker-root",
            str(tmp / "docker"),
            "--log-root",
            str(tmp / "log"),
            "--state-dir",
            str(tmp / "state"),
            "--metrics-port",
            "0",
            "--node-name",
            "node-a",
            *flags,
        ]
    )


def agent(tmp: Path, sink: ListSink, *flags: str, enricher: Enricher | None = None) -> Agent:
    return Agent(settings(tmp, *flags), sink, enricher=enricher)


def drain(a: Agent, turns: int = 50) -> None:
    """Scan and read until nothing more comes."""
    for _ in range(turns):
        a.scan()
        while a.turn():
            pass
    a.save()


def rename(src: Path, dst: Path) -> None:
    os.rename(src, dst)
