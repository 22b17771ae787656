"""Files a real Docker engine wrote, kept as golden data: the collector must read them right.

tests/golden/docker/containers/ holds two container folders as dockerd 20.10 (Debian's
docker.io, json-file driver) left them, config.v2.json included, captured from containers on
the Debian base image of deploy/local/docker.sh:
- `golden-web-0-app` ran tests/e2e/container_workload.py with 60 lines and
  `--log-opt max-size=20k --log-opt max-file=10` (so one rotated file, `-json.log.1`); what it
  printed is in tests/golden/docker/truth/golden-web-0-app.jsonl, written by the program.
- `golden-web-0-cutter` printed `"a" * 16383 + "é" + "tail"`: the engine cuts lines at 16384
  bytes, here inside the "é", and writes each half as U+FFFD. The character is lost by the
  runtime, before any collector: the record must say what the file says, two U+FFFD.
Both carry the Kubernetes labels a kubelet sets (namespace golden, pod web-0).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson

from collector.decode import decode_docker

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "docker"
CONTAINERS = GOLDEN / "containers"
APP = "1aeec7112319f79c2d6961f46940e108535df089018868324422b78129ed41aa"
CUTTER = "7c713e56f82cba43c7603311724a5fd92e083e1b21c3ba52788514786e7e8deb"


def log_lines(container: str) -> list[bytes]:
    """The container's lines, oldest first: rotated files (highest number first), then current."""
    folder = CONTAINERS / container
    rotated = sorted(folder.glob("*-json.log.*"), key=lambda p: -int(p.suffix[1:]))
    lines: list[bytes] = []
    for path in [*rotated, folder / f"{container}-json.log"]:
        lines += path.read_bytes().splitlines()
    return lines


def test_the_collector_ships_every_record_the_engine_wrote_once_with_its_names(
    tmp_path: Path,
) -> None:
    out = tmp_path / "records.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "collector",
            "--once",
            "--docker-root",
            str(CONTAINERS),
            "--log-root",
            str(tmp_path / "no-log-root"),
            "--state-dir",
            str(tmp_path / "state"),
            "--sink",
            f"file:{out}",
            "--kubernetes",
            "off",
            "--metrics-port",
            "0",
            "--multiline",
            "golden/*/*=python",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]

    truth = (GOLDEN / "truth" / "golden-web-0-app.jsonl").read_text(encoding="utf-8")
    want = Counter((APP, r["stream"], r["message"]) for r in map(json.loads, truth.splitlines()))
    want[(CUTTER, "stdout", "a" * 16383 + "\ufffd\ufffd" + "tail")] += 1
    got = Counter((r["container"]["id"], r["stream"], r["message"]) for r in records)
    assert got == want

    names = {APP: "golden-web-0-app", CUTTER: "golden-web-0-cutter"}
    for record in records:
        container = record["container"]
        assert container["name"] == names[container["id"]]
        assert container["image"]["name"] == "logferry/base:bookworm"
        assert container["runtime"] == "docker"
        assert record["kubernetes"]["namespace"] == "golden"
        assert record["kubernetes"]["pod"]["name"] == "web-0"
        assert record["kubernetes"]["container"]["name"] == names[container["id"]].split("-")[-1]
        assert "parse_error" not in record.get("tags", [])


def test_the_engine_cuts_at_16_kib_escapes_markup_and_keeps_other_text_raw() -> None:
    lines = log_lines(APP)
    decoded = [decode_docker(raw) for raw in lines]
    assert all(line.error is None for line in decoded)
    pieces = [line for line in decoded if line.partial]
    assert len(pieces) == 2, "the 40 KB line comes in three pieces, two without a newline"
    assert all(len(p.text.encode()) == 16384 for p in pieces)
    markup = next(raw for raw in lines if b"ampersands" in raw)
    assert b"\\u003ca href=" in markup
    assert b"\\u0026" in markup
    assert b"<" not in markup
    assert "日本語".encode() in next(raw for raw in lines if b"emoji" in raw)
    assert [line.stream for line in decoded if "Traceback" in line.text] == ["stderr"]
