"""What the tests of real runtimes share: the workload containers, the collector they run, the
truth they compare with."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[2]
WORKLOAD = Path(__file__).with_name("container_workload.py")
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def truth(path: Path) -> Counter[tuple[str, str]]:
    """(stream, message) of every record the workload says it printed."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return Counter((r["stream"], r["message"]) for r in map(json.loads, lines))


def collector(tmp: Path, out: Path, namespace: str, docker_root: Path, log_root: Path) -> list[str]:
    """The collector over one runtime's files, to a file sink, with Python traces joined."""
    return [
        sys.executable,
        "-m",
        "collector",
        "--docker-root",
        str(docker_root),
        "--log-root",
        str(log_root),
        "--state-dir",
        str(tmp / f"state-{out.stem}"),
        "--sink",
        f"file:{out}",
        "--kubernetes",
        "off",
        "--metrics-port",
        "0",
        "--scan-interval",
        "0.2",
        "--multiline",
        f"{namespace}/*/*=python",
    ]


def records(out: Path, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """The whole records written so far that `keep` selects."""
    if not out.exists():
        return []
    found = [orjson.loads(line) for line in out.read_bytes().splitlines() if line.endswith(b"}")]
    return [r for r in found if keep(r)]


def follow_to_the_end(
    process: subprocess.Popen[bytes],
    out: Path,
    keep: Callable[[dict[str, Any]], bool],
    expected: int,
    log: Path,
) -> list[dict[str, Any]]:
    """Wait (bounded) until `expected` records are out, stop the collector, return them all."""
    deadline = time.monotonic() + 180
    while len(records(out, keep)) < expected and time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0, log.read_text()[-3000:]
    return records(out, keep)


def once(command: list[str], log: Path) -> None:
    with open(log, "ab") as stderr:
        done = subprocess.run([*command, "--once"], cwd=REPO, env=ENV, stderr=stderr, timeout=300)
    assert done.returncode == 0, log.read_text()[-3000:]


def assert_same(name: str, got: Counter[tuple[str, str]], want: Counter[tuple[str, str]]) -> None:
    lost, extra = want - got, got - want
    differences = lost + extra
    assert not differences, (
        f"{name}: {sum(lost.values())} lost, {sum(extra.values())} extra; "
        f"first lost: {[repr(k)[:300] for k in list(lost)[:3]]}; "
        f"first extra: {[repr(k)[:300] for k in list(extra)[:3]]}"
    )


@dataclass(frozen=True)
class Ran:
    """A container that ran the workload, and what its config.v2.json should tell."""

    id: str
    name: str
    image: str
    namespace: str
    pod: str
    container: str
    truth: Path


def run_workload(
    client: Any,
    image: str,
    tmp: Path,
    namespace: str,
    pod: str,
    container: str,
    lines: int,
    log_options: dict[str, str],
) -> tuple[Any, Ran]:
    import docker

    truth_dir = tmp / "truth"
    truth_dir.mkdir(exist_ok=True)
    name = f"{namespace}-{pod}-{container}"
    started = client.containers.run(
        image,
        ["python3", "/workload.py", f"/truth/{name}.jsonl", str(lines)],
        name=name,
        detach=True,
        network_mode="none",
        labels={
            "io.kubernetes.pod.namespace": namespace,
            "io.kubernetes.pod.name": pod,
            "io.kubernetes.container.name": container,
            "org.example.team": "logs <>&",
        },
        volumes={
            str(WORKLOAD): {"bind": "/workload.py", "mode": "ro"},
            str(truth_dir): {"bind": "/truth", "mode": "rw"},
        },
        log_config=docker.types.LogConfig(type="json-file", config=log_options),
    )
    return started, Ran(
        started.id, name, image, namespace, pod, container, truth_dir / f"{name}.jsonl"
    )
