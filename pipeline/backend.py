"""Which search server the pipeline talks to: Elasticsearch (8 or 9) or OpenSearch.

One client, elasticsearch-py's, serves both. It asks every server for its Elasticsearch 8
compatible media types (`application/vnd.elasticsearch+json; compatible-with=8`), which
Elasticsearch 8 and 9 take and OpenSearch refuses with 406; for OpenSearch this transport
sends the plain `application/json` and `application/x-ndjson` instead, which is all that
differs on the wire. The server's kind is its own answer to GET / (OpenSearch says
`"distribution": "opensearch"` in `version`), asked before the first request, or the
`--backend` setting.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from elastic_transport import HttpHeaders, Transport, TransportApiResponse
from elastic_transport._models import DEFAULT, DefaultType
from elasticsearch import Elasticsearch

AUTO = "auto"
ELASTICSEARCH = "elasticsearch"
OPENSEARCH = "opensearch"
BACKENDS = (AUTO, ELASTICSEARCH, OPENSEARCH)

COMPAT = re.compile(r"application/vnd\.elasticsearch\+([\w-]+); ?compatible-with=\d+")


def backend_name(text: str) -> str:
    if text not in BACKENDS:
        raise ValueError(f"must be one of {', '.join(BACKENDS)}, got {text!r}")
    return text


def plain(headers: Mapping[str, Any]) -> HttpHeaders:
    """The headers with Elasticsearch's compatible media types turned into the plain ones."""
    out = HttpHeaders(headers)
    for name in ("accept", "content-type"):
        if name in out:
            out[name] = COMPAT.sub(r"application/\1", out[name])
    return out


class SearchTransport(Transport):
    """elasticsearch-py's transport, which learns the server's kind before its first request."""

    kind: str | None = None
    """ELASTICSEARCH or OPENSEARCH; None until known (`--backend auto` before GET / answered)."""

    def perform_request(  # type: ignore[override]
        self,
        method: str,
        target: str,
        *,
        headers: Mapping[str, Any] | DefaultType = DEFAULT,
        **kwargs: Any,
    ) -> TransportApiResponse:
        if self.kind is None:
            self.kind = self.detect()
        if self.kind == OPENSEARCH and not isinstance(headers, DefaultType):
            headers = plain(headers)
        return super().perform_request(method, target, headers=headers, **kwargs)

    def detect(self) -> str | None:
        """The kind GET / says; None when it did not answer 200 (the request that follows
        then fails with the server's own reason, 401 or the like, and the next one asks
        again). A connection failure is raised, once, untried again: the caller's own
        retries (preflight's, the bulk's) cover it."""
        reply = Transport.perform_request(
            self, "GET", "/", headers={"accept": "application/json"}, max_retries=0
        )
        if reply.meta.status != 200 or not isinstance(reply.body, dict):
            return None
        version = reply.body.get("version") or {}
        return OPENSEARCH if version.get("distribution") == OPENSEARCH else ELASTICSEARCH


def connect(url: str, backend: str = AUTO, **options: Any) -> Elasticsearch:
    """An elasticsearch-py client for the server at `url` (or the nodes of comma-separated
    URLs: a request that cannot reach one is tried on the next), of the kind `backend` names."""
    es = Elasticsearch(url.split(","), transport_class=SearchTransport, **options)
    transport = es.transport
    assert isinstance(transport, SearchTransport)
    if backend != AUTO:
        transport.kind = backend
    # The client's own product check refuses any server but Elasticsearch; the kind is
    # judged above, from GET /, instead.
    es._verified_elasticsearch = True
    return es


def kind(es: Elasticsearch) -> str:
    """The server's kind, asking it when not known yet; a client made without `connect`
    (tests, benchmarks) talks to Elasticsearch."""
    transport = es.transport
    if not isinstance(transport, SearchTransport):
        return ELASTICSEARCH
    if transport.kind is None:
        transport.kind = transport.detect()
    return transport.kind or ELASTICSEARCH
