"""kubelet gzips a rotated file at the next rotation: a collector away for two rotations
finds only the `.gz` of the file it was reading, and of the one born while it was away.
Both are read from the `.gz` (the rest of the first, all of the second), exactly once."""

from __future__ import annotations

import random
import signal
import time

import pytest

from harness.nodewriter import Rotation, default_node
from tests.e2e.test_faults import Flows, Size, seed, sizes

pytestmark = pytest.mark.e2e


@sizes(Size(12, 1000, 50), Size(24, 2000, 150))
def test_collector_killed_twice_while_kubelet_rotates_every_3_s(flows: Flows, size: Size) -> None:
    s = seed()
    rng = random.Random(s)
    flow = flows(
        f"collector kill -9 x2 for two 3 s kubelet rotations [seed {s}]",
        default_node(size.containers, s),
        rate=size.rate,
        # Docker keeps its files: this test is about kubelet's.
        docker_rotation=Rotation(max_bytes=None, every=3, max_files=30),
        cri_rotation=Rotation(max_bytes=None, every=3, max_files=5),
        seed=s,
    )
    cri = sum(1 for spec in flow.specs.values() if spec.runtime == "cri")
    flow.start(pipelines=2, duration=size.seconds)
    for _ in range(2):
        time.sleep(rng.uniform(size.seconds / 10, size.seconds / 5))
        flow.kill_collector(signal.SIGKILL)
        # Away while every CRI container rotates twice on average (the second rotation
        # gzips the file being read at the kill), but not four times (its .gz is removed).
        before = flow.writer.rotations("cri")
        deadline = time.monotonic() + 30
        while flow.writer.rotations("cri") < before + 2 * cri and time.monotonic() < deadline:
            time.sleep(0.1)
        assert flow.writer.rotations("cri") >= before + 2 * cri, "kubelet did not rotate"
        flow.start_collector()
        flow.wait_collector_started()
    flow.writer.join()
    outcome = flow.check(timeout=240 + 2 * size.seconds)
    flow.assert_exactly_once(outcome)
