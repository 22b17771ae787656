"""Fixtures the unit tests share: the Kubernetes API stand-in of harness/k8s_api.py and an
Enricher synced with it. A module that needs objects in the API before the first list
defines its own `api`; `enricher` then starts on that one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.enrich import Enricher
from harness.k8s_api import KubeAPI
from harness.wait import until

NODE = "node-a"
"""The node the Enricher watches pods of."""


@pytest.fixture
def api() -> Iterator[KubeAPI]:
    """The stand-in, answering, with a bookmark every 0.2 s."""
    with KubeAPI(bookmark_every=0.2) as server:
        yield server.up()


@pytest.fixture
def enricher(api: KubeAPI, tmp_path: Path) -> Iterator[Enricher]:
    """An Enricher for NODE on `api` (short backoff) that has listed pods and namespaces."""
    made = Enricher(NODE, kubeconfig=api.kubeconfig(tmp_path / "kubeconfig"), backoff_max=0.2)
    made.start()
    until(lambda: made.synced)
    yield made
    made.stop()
