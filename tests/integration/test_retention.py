"""`pipeline retention` against a real node: back-dated indices go, recent ones and others stay."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def retention(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ELASTICSEARCH_", "LOGFERRY"))}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "retention", "--elasticsearch-url", url, *args],
        capture_output=True, cwd=REPO, env={**env, "PYTHONPATH": str(REPO)}, text=True,
        timeout=120,
    )  # fmt: skip


def test_old_daily_indices_are_listed_then_deleted(
    es: Elasticsearch, elasticsearch_url: str, prefix: str
) -> None:
    today = datetime.now(UTC).date()

    def day(ago: int) -> str:
        return (today - timedelta(days=ago)).strftime("%Y.%m.%d")

    old = [f"{prefix}-shop-{day(30)}", f"{prefix}-kube-system-{day(8)}"]
    kept = [f"{prefix}-shop-{day(7)}", f"{prefix}-shop-{day(0)}", f"{prefix}-shop-archive"]
    for index in old + kept:
        es.index(index=index, document={"message": index}, refresh=True)
    es.indices.close(index=old[0])  # a closed index is old all the same
    pattern = f"{prefix}-{{kubernetes.namespace}}-{{@timestamp:%Y.%m.%d}}"

    dry = retention(elasticsearch_url, "--index", pattern, "--keep-days", "7")
    assert dry.returncode == 0, dry.stderr
    assert [line.split()[2] for line in dry.stdout.splitlines()[:-1]] == old
    assert "a dry run" in dry.stdout.splitlines()[-1]
    assert all(es.indices.exists(index=i) for i in old + kept)

    done = retention(elasticsearch_url, "--index", pattern, "--keep-days", "7", "--apply")
    assert done.returncode == 0, done.stderr
    assert not any(es.indices.exists(index=i) for i in old)
    assert all(es.indices.exists(index=i) for i in kept)

    again = retention(elasticsearch_url, "--index", pattern, "--keep-days", "7", "--apply")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("0 indices")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--index", "logferry-{kubernetes.namespace}", "--keep-days", "7"], "no {@timestamp"),
        (["--keep-days", "0"], "keep_days"),
        ([], "keep_days"),
    ],
)
def test_retention_refuses_what_it_cannot_do(
    elasticsearch_url: str, args: list[str], named: str
) -> None:
    done = retention(elasticsearch_url, *args)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert named in line
