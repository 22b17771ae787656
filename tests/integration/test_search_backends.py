"""The other search servers deploy/local starts (issue 21) take our kind of documents.

Each case talks plain HTTP to a real Elasticsearch 9 or OpenSearch node, the session's of
the backend matrix (tests/conftest.py: ELASTICSEARCH9_URL or OPENSEARCH_URL, else started
by `SEARCH=... deploy/local/elasticsearch.sh start`). Plain HTTP, to check the servers
themselves rather than our client of them.

Our Elasticsearch nodes lack the data-streams module, which is not published as a jar: a data
stream is created by indexing into it, but there is no `_data_stream` API to delete it, so on
Elasticsearch 9 each run leaves one small data stream behind.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.integration

BACKENDS = {"elasticsearch9": "elasticsearch9_url", "opensearch": "opensearch_url"}


class Server:
    """A search server's REST API over plain HTTP: JSON in and out, errors carry their body."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path}: {exc.code} {exc.read().decode()}") from exc


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> tuple[str, Server]:
    return request.param, Server(request.getfixturevalue(BACKENDS[request.param]))


@pytest.fixture
def prefix(backend: tuple[str, Server]) -> Iterator[str]:
    name = f"logferry-b{uuid.uuid4().hex[:8]}"
    yield name
    server = backend[1]
    server.call("DELETE", f"/{name}-*?allow_no_indices=true&ignore_unavailable=true")
    server.call("DELETE", f"/_index_template/{name}")


def test_the_server_is_the_kind_its_variable_names(backend: tuple[str, Server]) -> None:
    kind, server = backend
    version = server.call("GET", "/")["version"]
    if kind == "opensearch":
        assert version["distribution"] == "opensearch"
    else:
        assert "distribution" not in version
        assert version["number"].startswith("9.")


def test_a_document_indexed_under_a_template_is_mapped_by_it_and_found(
    backend: tuple[str, Server], prefix: str
) -> None:
    server = backend[1]
    server.call(
        "PUT",
        f"/_index_template/{prefix}",
        {
            "index_patterns": [f"{prefix}-*"],
            "priority": 500,
            "template": {
                "settings": {"number_of_shards": 1, "number_of_replicas": 0},
                "mappings": {
                    "properties": {
                        "@timestamp": {"type": "date_nanos"},
                        "message": {"type": "text"},
                        "kubernetes": {"properties": {"namespace": {"type": "keyword"}}},
                    }
                },
            },
        },
    )
    index = f"{prefix}-2026.11.30"
    document = {
        "@timestamp": "2026-11-30T23:01:02.123456789Z",
        "message": "connection refused by upstream",
        "kubernetes": {"namespace": "payments"},
    }
    created = server.call("PUT", f"/{index}/_create/e1?refresh=true", document)
    assert created["result"] == "created"

    mapping = server.call("GET", f"/{index}/_mapping")[index]["mappings"]["properties"]
    assert mapping["@timestamp"]["type"] == "date_nanos"
    assert server.call("GET", f"/{index}")[index]["settings"]["index"]["number_of_replicas"] == "0"
    found = server.call(
        "POST",
        f"/{index}/_search",
        {
            "query": {
                "bool": {
                    "must": [{"match": {"message": "refused"}}],
                    "filter": [{"term": {"kubernetes.namespace": "payments"}}],
                }
            }
        },
    )
    assert [(hit["_id"], hit["_source"]) for hit in found["hits"]["hits"]] == [("e1", document)]


def test_an_index_compressed_with_best_compression_takes_and_keeps_documents(
    backend: tuple[str, Server],
) -> None:
    # Elasticsearch 9 compresses it with zstd, through its native access (logsdb indices use it)
    server = backend[1]
    index = f"logferry-z{uuid.uuid4().hex[:8]}"
    server.call(
        "PUT",
        f"/{index}",
        {"settings": {"index": {"codec": "best_compression", "number_of_replicas": 0}}},
    )
    try:
        for n in range(3):
            server.call("PUT", f"/{index}/_create/{n}", {"message": f"compressed line {n}"})
        flushed = server.call("POST", f"/{index}/_flush")
        assert flushed["_shards"]["failed"] == 0, flushed
        server.call("POST", f"/{index}/_refresh")
        assert server.call("GET", f"/{index}/_count")["count"] == 3
    finally:
        server.call("DELETE", f"/{index}")


def test_a_data_stream_is_created_by_indexing_into_it_and_searched(
    backend: tuple[str, Server],
) -> None:
    kind, server = backend
    stream = f"logferry-ds{uuid.uuid4().hex[:8]}"
    server.call(
        "PUT",
        f"/_index_template/{stream}",
        {
            "index_patterns": [stream],
            "priority": 500,
            "data_stream": {},
            "template": {
                "settings": {"number_of_shards": 1, "number_of_replicas": 0},
                "mappings": {"properties": {"@timestamp": {"type": "date_nanos"}}},
            },
        },
    )
    try:
        created = server.call(
            "POST",
            f"/{stream}/_doc?refresh=true",
            {"@timestamp": "2026-11-30T23:01:02.5Z", "message": "started"},
        )
        assert created["_index"].startswith(f".ds-{stream}-")
        found = server.call(
            "POST", f"/{stream}/_search", {"query": {"match": {"message": "started"}}}
        )
        assert [hit["_index"] for hit in found["hits"]["hits"]] == [created["_index"]]
    finally:
        if kind == "opensearch":
            server.call("DELETE", f"/_data_stream/{stream}")
            server.call("DELETE", f"/_index_template/{stream}")
