"""`make demo` watches its own workers: a dead collector stops it with the reason.

The demo starts the local servers through deploy/local (already up for the test session,
so `start` finds them running) and real collector and pipeline processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def test_the_demo_stops_with_the_reason_when_a_worker_dies(
    tmp_path: Path, kafka_bootstrap: str, elasticsearch_url: str
) -> None:
    demo = subprocess.Popen(
        [sys.executable, str(REPO / "deploy" / "demo" / "local_demo.py")],
        cwd=REPO,
        env={
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "ELASTICSEARCH_URL": elasticsearch_url,
            **{"DEMO_WORK": str(tmp_path), "DEMO_SECONDS": "600", "DEMO_RATE": "50"},
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        pid_file = tmp_path / "collector.pid"
        deadline = time.monotonic() + 300
        while not pid_file.exists() and demo.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pid_file.exists(), demo.communicate(timeout=60)
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        out, err = demo.communicate(timeout=120)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 1, (out, err)
    assert "the collector stopped (exit -9)" in err
    assert "make services-down" in err
    assert "Records per namespace" not in out
