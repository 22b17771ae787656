"""The pipeline's key promises on every search server it supports (the backend matrix):
Elasticsearch 8 (the `es` server of the other tests), Elasticsearch 9 and OpenSearch, each
a real node (tests/conftest.py `search`). `setup` installs the templates the server's kind
takes, once; `run` indexes every record exactly once, a replay adding none; a document the
server refuses for its content goes to the dead-letter topic.

Only these run three times, to keep `make test` short; the rest of the suite runs on
Elasticsearch 8, whose requests are the same as Elasticsearch 9's.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest

from harness.collector_run import new_topic
from harness.pipeline_run import (
    count,
    produce,
    record,
    start_pipeline,
    wait_for_commits,
    wait_for_count,
)
from pipeline.backend import connect
from pipeline.setup import install_templates
from pipeline.templates import SINGLE_NODE
from tests.conftest import Search
from tests.integration.test_pipeline import dead_letters, stop

RECORDS = {"elasticsearch8": 100_000, "elasticsearch9": 20_000, "opensearch": 20_000}
"""Fewer on the servers added for the matrix: the same path, a smaller share of CI time."""


def test_setup_is_idempotent_and_says_what_it_changed(search: Search) -> None:
    def setup() -> list[str]:
        command = ["setup", "--elasticsearch-url", search.url, "--replicas", "0"]
        done = subprocess.run(
            [sys.executable, "-m", "pipeline", *command],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    setup()
    assert setup() == [
        "component template logferry-settings: unchanged",
        "component template logferry-mappings: unchanged",
        "index template logferry: unchanged",
        "index template logferry-ds: unchanged",
    ]


def test_records_become_as_many_documents_and_a_replay_adds_none(
    tmp_path: Path, kafka_bootstrap: str, search: Search, search_prefix: str
) -> None:
    prefix, es, total = search_prefix, search.client, RECORDS[search.name]
    topic = new_topic(kafka_bootstrap)
    records = [record(n, prefix) for n in range(total)]
    produce(kafka_bootstrap, topic, records)
    pipeline = start_pipeline(tmp_path, kafka_bootstrap, search.url, topic, prefix)
    try:
        assert wait_for_count(es, prefix, total, timeout=180) == total
        produce(kafka_bootstrap, topic, records)
        assert wait_for_commits(kafka_bootstrap, topic, timeout=180), "the replay not committed"
        assert count(es, prefix) == total
    finally:
        stop(pipeline)
    doc = es.search(index=f"{prefix}-shop-*", size=1, query={"term": {"event.id": f"{prefix}-3"}})
    source = doc["hits"]["hits"][0]["_source"]
    assert source["message"] == f"{prefix} record 3"
    assert source["event"]["ingested"] >= "2026"
    # Label keys keep their spelling, `app` beside `app.kubernetes.io/name`, and are searchable.
    assert source["kubernetes"]["labels"] == {"app": "shop", "app.kubernetes.io/name": "shop"}
    labelled = es.count(
        index=f"{prefix}-*", query={"term": {"kubernetes.labels.app.kubernetes.io/name": "shop"}}
    )
    assert labelled["count"] > 0
    assert doc["hits"]["hits"][0]["_index"] == f"{prefix}-shop-2026.11.27"


def test_a_document_that_cannot_be_mapped_goes_to_the_dead_letter_topic(
    tmp_path: Path, kafka_bootstrap: str, search: Search, search_prefix: str
) -> None:
    prefix = search_prefix
    topic = new_topic(kafka_bootstrap)
    records = [record(n, prefix) for n in range(1000)]
    records[500]["log"]["offset"] = "not a number"
    produce(kafka_bootstrap, topic, records)
    pipeline = start_pipeline(tmp_path, kafka_bootstrap, search.url, topic, prefix)
    try:
        assert wait_for_count(search.client, prefix, 999, timeout=120) == 999
    finally:
        stop(pipeline)
    (letter,) = dead_letters(kafka_bootstrap, topic, 1)
    assert orjson.loads(letter["record"])["event"]["id"] == f"{prefix}-500"
    assert "offset" in letter["error"]
    assert letter["index"] == f"{prefix}-web-2026.11.27"


@pytest.mark.parametrize("server", ["elasticsearch9_url", "opensearch_url"])
def test_setup_gives_new_indices_the_shards_replicas_and_refresh_chosen(
    server: str, request: pytest.FixtureRequest
) -> None:
    # Not on the Elasticsearch 8 node: the rest of the suite indexes into it meanwhile, under
    # the same templates, and Elasticsearch 9 takes the same requests.
    url = request.getfixturevalue(server)
    es = connect(url, request_timeout=60)
    prefix = f"logferry-t{uuid.uuid4().hex[:8]}"

    def setup(*flags: str) -> None:
        command = ["setup", "--elasticsearch-url", url, *flags]
        done = subprocess.run(
            [sys.executable, "-m", "pipeline", *command], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr

    try:
        setup("--shards", "2", "--replicas", "0", "--refresh-interval", "30s")
        index = f"{prefix}-shop-2026.11.27"
        es.indices.create(index=index)
        chosen = es.indices.get_settings(index=index)[index]["settings"]["index"]
        assert (chosen["number_of_shards"], chosen["number_of_replicas"]) == ("2", "0")
        assert chosen["refresh_interval"] == "30s"
        # The defaults again (replicas aside): one shard, refreshed every second.
        setup("--replicas", "0")
        later = f"{prefix}-web-2026.11.27"
        es.indices.create(index=later)
        chosen = es.indices.get_settings(index=later)[later]["settings"]["index"]
        assert (chosen["number_of_shards"], chosen["refresh_interval"]) == ("1", "1s")
    finally:
        # What the matrix's other tests on this server expect.
        install_templates(es, SINGLE_NODE, say=lambda _: None)
        es.indices.delete(index=f"{prefix}-*", allow_no_indices=True, ignore_unavailable=True)
        es.close()
