"""CRI-format files a real runtime wrote, kept as golden data: the collector must read them right.

tests/golden/cri/pods/ holds what conmon 2.1 (Debian's podman 4.3, `--log-driver k8s-file`,
the writer CRI-O uses) wrote for two containers on the Debian base image of
deploy/local/docker.sh, at the paths a kubelet gives them (namespace golden, pod web-0):
- `app` ran tests/e2e/container_workload.py with 30 lines; what it printed is in
  tests/golden/cri/truth/app.jsonl, written by the program.
- `cutter` printed `"a" * 8191 + "é" + "tail"`: conmon cuts lines at 8192 bytes, here between
  the two bytes of the "é", and writes the raw bytes. Unlike Docker's json-file driver
  (tests/unit/test_golden_docker.py) nothing is lost yet: the collector must mend it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson

from collector.decode import decode_cri

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "cri"
UID = "0c6a4f6e-3b1e-4d0a-9f3c-5b7f1e2a9d10"
POD = GOLDEN / "pods" / f"golden_web-0_{UID}"


def test_the_collector_ships_every_record_conmon_wrote_once_with_its_pod(tmp_path: Path) -> None:
    out = tmp_path / "records.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "collector",
            "--once",
            "--docker-root",
            str(tmp_path / "no-docker"),
            "--log-root",
            str(GOLDEN),
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

    truth = (GOLDEN / "truth" / "app.jsonl").read_text(encoding="utf-8")
    want = Counter(("app", r["stream"], r["message"]) for r in map(json.loads, truth.splitlines()))
    want[("cutter", "stdout", "a" * 8191 + "é" + "tail")] += 1
    got = Counter(
        (r["kubernetes"]["container"]["name"], r["stream"], r["message"]) for r in records
    )
    assert got == want
    for record in records:
        assert record["kubernetes"]["namespace"] == "golden"
        assert record["kubernetes"]["pod"] == {"name": "web-0", "uid": UID}
        assert not {"parse_error", "invalid_utf8"} & set(record.get("tags", []))
    # The runtime's times carry an offset (+00:00); records say UTC with a Z, nanoseconds kept.
    assert all(r["@timestamp"].endswith("Z") and len(r["@timestamp"]) == 30 for r in records)


def test_conmon_cuts_at_8_kib_in_raw_bytes_and_writes_offset_times() -> None:
    raw = (POD / "cutter" / "0.log").read_bytes().splitlines()
    assert [line.split(b" ")[2] for line in raw] == [b"P", b"F"]
    assert raw[0].endswith(b"\xc3")
    assert raw[1].split(b" ", 3)[3] == b"\xa9tail"
    first = decode_cri(raw[0])
    assert first.partial
    assert len(first.text.encode("utf-8", "surrogateescape")) == 8192
    assert raw[0].split(b" ")[0].endswith(b"+00:00")
    app = [decode_cri(line) for line in (POD / "app" / "0.log").read_bytes().splitlines()]
    assert all(line.error is None for line in app)
    assert sum(line.partial for line in app) == 4, "the 40 KB line comes in five pieces"
    markup = next(line.text for line in app if "ampersands" in line.text)
    assert markup.startswith('<a href="/q?x=1&y=2">'), "CRI keeps <>& as they are"
