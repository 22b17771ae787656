"""The record has one declaration (logferry/record.py): the document, the index template and
every record the collector writes agree with it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
from msgpack import Timestamp

from collector.encode import ForwardEncoder
from logferry.record import FIELDS, markdown
from pipeline.backend import ELASTICSEARCH
from pipeline.templates import mappings
from tests.unit.logfiles import append, cri_line, docker_container, docker_line

REPO = Path(__file__).resolve().parents[2]
DECLARED = {f.name for f in FIELDS}
OPEN = {f.name for f in FIELDS if f.mapping["type"] in ("object", "flattened")}
"""Fields whose keys are free: anything below them is within the contract."""


def leaves(record: dict[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in record.items():
        name = f"{prefix}{key}"
        if name in OPEN:
            out.add(name)
        elif isinstance(value, dict) and value:
            out |= leaves(value, f"{name}.")
        else:
            out.add(name)
    return out


def test_the_document_is_the_declaration() -> None:
    assert (REPO / "docs" / "record.md").read_text() == markdown(), (
        "docs/record.md is stale: python -m logferry.record > docs/record.md"
    )


def test_the_index_template_maps_every_declared_field() -> None:
    mapped = mappings(ELASTICSEARCH)["template"]["mappings"]["properties"]
    for field in FIELDS:
        node: dict[str, Any] = {"properties": mapped}
        for part in field.name.split("."):
            node = node["properties"][part]
        assert node == field.mapping, field.name


def test_file_records_hold_only_declared_fields(tmp_path: Path) -> None:
    log = docker_container(tmp_path / "docker", "d" * 64)
    big = "x" * 300
    append(log, docker_line("plain"), b'{"broken\n', docker_line(big, "stderr"))
    append(log, *[docker_line(f"fast path line {n}") for n in range(3000)])
    pod = tmp_path / "log" / "pods" / "shop_web-1_0a1b2c3d-0000-4000-8000-000000000001" / "app"
    pod.mkdir(parents=True)
    append(pod / "0.log", cri_line("part ", tag="P"), cri_line("whole"), b"not cri at all\n")
    done = subprocess.run(
        [sys.executable, "-m", "collector", "--once", "--sink", "stdout",
         "--docker-root", str(tmp_path / "docker"), "--log-root", str(tmp_path / "log"),
         "--state-dir", str(tmp_path / "state"), "--metrics-port", "0",
         "--max-record-bytes", "4KiB"],
        capture_output=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert len(records) > 3000
    seen = set().union(*(leaves(r) for r in records))
    assert seen <= DECLARED, seen - DECLARED
    assert {"container.id", "kubernetes.pod.name", "tags", "log.offset"} <= seen


def test_forwarded_records_hold_only_declared_fields() -> None:
    encoder = ForwardEncoder("fluent.record", 2048, {"host.name": "n", "input.type": "forward"})
    entries = [
        [Timestamp(1764500000, 5), {"message": "hello", "user": {"id": 7}, "n": 1.5}],
        [1764500001, {"log": "from docker\n", "container_name": "web"}],
        [1764500002, {"message": "y" * 5000}],
    ]
    batches = encoder.encode("app.web", entries, "fwd")
    records = [orjson.loads(v) for batch in batches for v in batch]
    seen = set().union(*(leaves(r) for r in records))
    assert seen <= DECLARED, seen - DECLARED
    assert {"fluent.tag", "fluent.record", "input.type", "tags"} <= seen
