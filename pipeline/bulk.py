"""One bulk request to Elasticsearch, and what became of each document in it.

Items are sorted three ways: done (created, or refused as a duplicate of a document already
there, which with `_id` = `event.id` means a replay), retry (the cluster was busy or
failing, or refused the write whatever the document: a write block, rights missing), and
refused for their content (mapping errors, too large), which belong in the dead-letter
topic rather than in an endless retry. A reply that does not account for every document
sent is no answer at all: the whole request is retried.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from elastic_transport import ApiError, ConnectionError, ConnectionTimeout, TransportError
from elasticsearch import Elasticsearch
from elasticsearch.serializer import NdjsonSerializer, OrjsonSerializer

from pipeline.metrics import METRICS

FILTER = ["errors", "items.*.status", "items.*.error.type", "items.*.error.reason"]


CLEAN = b'{"errors":false,"items":['
"""How a reply with every document indexed begins, with FILTER (`took` left out)."""


class Replies(OrjsonSerializer):
    """JSON replies, but a bulk reply without errors is not parsed item by item.

    Its tens of thousands of `{"create":{"status":201}}` say nothing `errors` does not, and
    parsing them took about 0.2 us a document, holding the interpreter lock.
    """

    def json_loads(self, data: bytes) -> Any:
        if data.startswith(CLEAN):
            return {"errors": False}
        return super().json_loads(data)


class Bodies(NdjsonSerializer):
    """Bulk bodies sent as they are: ours are NDJSON already, and the client's own
    serializer copied each 5 MB body twice, into a bytearray and out again, holding the
    interpreter lock."""

    def dumps(self, data: Any) -> bytes:
        if type(data) is bytes and data.endswith(b"\n"):
            return data
        return super().dumps(data)


class Outcome(NamedTuple):
    retry: list[int]
    """Positions of documents to send again."""
    refused: list[tuple[int, str]]
    """Positions of documents refused for their content, with the reason."""
    duplicates: int


class Unavailable(Exception):
    """The whole request failed in a way worth retrying (down, busy, timed out, or refused
    as a whole: credentials or rights wrong, which an operator can mend while we wait)."""

    def __init__(self, text: str, kind: str) -> None:
        super().__init__(text)
        self.kind = kind
        """The failure without its details, which differ from one retry to the next."""


class TooLarge(Exception):
    """The request exceeds the node's http.max_content_length: send fewer documents."""


def send(es: Elasticsearch, body: bytes, count: int) -> Outcome:
    started = time.perf_counter()
    try:
        reply = es.bulk(operations=body, filter_path=FILTER)
    except (ConnectionError, ConnectionTimeout) as exc:
        raise Unavailable(f"cannot reach Elasticsearch: {exc}", "unreachable") from exc
    except ApiError as exc:
        if exc.meta.status == 429 or exc.meta.status >= 500:
            status = exc.meta.status
            raise Unavailable(f"Elasticsearch answered {status}: {exc}", str(status)) from exc
        if exc.meta.status == 413:
            raise TooLarge(str(exc)) from exc
        # The records are not at fault when the whole request is refused: crashing would
        # read them again anyway, and waiting says why in /readyz.
        raise Unavailable(
            f"Elasticsearch refused the bulk request: {exc}", str(exc.meta.status)
        ) from exc
    except TransportError as exc:
        raise Unavailable(str(exc), type(exc).__name__) from exc
    elapsed = time.perf_counter() - started
    outcome = read(reply.body, count)
    METRICS.bulk_seconds.observe(elapsed)
    return outcome


def read(reply: Any, count: int) -> Outcome:
    """What became of each of the `count` documents sent, from the reply's body.

    Raises Unavailable for a 200 that does not account for each document (fewer or more
    items, no boolean `errors`, an empty body, a proxy's HTML page): taken as indexed, its
    documents would be committed past and never stored.
    """
    errors = reply.get("errors") if isinstance(reply, dict) else None
    if errors is False:
        # With FILTER the node's clean reply says no more than this (Replies skips its
        # items), and `errors: false` is the node's word that every document went in.
        METRICS.indexed.inc(count)
        return Outcome([], [], 0)
    items = reply.get("items") if errors is True else None
    if not isinstance(items, list) or len(items) != count:
        raise unaccounted(reply, count)
    return sort(items)


def unaccounted(reply: Any, count: int) -> Unavailable:
    """The failure of a reply that is no account of the bulk, shown cut: a proxy's page
    may be long, and /readyz and the log repeat it."""
    shown = repr(reply)
    shown = shown if len(shown) <= 200 else shown[:200] + "..."
    return Unavailable(
        f"Elasticsearch's reply does not account for each of the {count} documents of the "
        f"bulk request: {shown}",
        "reply unaccounted",
    )


CLUSTER_STATE = frozenset({"index_closed_exception", "cluster_block_exception"})
"""Refusals (400 or 404 too) that tell the state of the cluster, not of the document."""


def cluster_state(result: dict[str, Any]) -> bool:
    """An item refused for the cluster's state: an index closed, a block, the cluster's
    shard limit reached (a `validation_exception` naming it) when the index is made."""
    error = result.get("error")
    if not isinstance(error, dict):
        return False
    kind = error.get("type")
    if kind in CLUSTER_STATE:
        return True
    reason = error.get("reason")
    return kind == "validation_exception" and isinstance(reason, str) and "shards" in reason


def sort(items: list[Any]) -> Outcome:
    retry: list[int] = []
    refused: list[tuple[int, str]] = []
    duplicates = 0
    indexed = 0
    for position, item in enumerate(items):
        result = next(iter(item.values())) if isinstance(item, dict) and len(item) == 1 else None
        status = result.get("status", 500) if isinstance(result, dict) else None
        if type(status) is not int:
            raise unaccounted(items, len(items))
        if status < 300:
            indexed += 1
        elif status == 409:
            duplicates += 1
        elif status in (401, 403, 429) or status >= 500 or cluster_state(result):
            # 401 and 403 say what the cluster lets us write, not what the document is:
            # a write block (cluster_block_exception: disk full, index made read-only) or
            # rights missing, which an operator mends; so do a closed index and the
            # cluster's shard limit. Dead-lettered, every document would be lost while
            # it lasts.
            retry.append(position)
        else:
            error = result.get("error")
            if isinstance(error, dict):
                reason = f"{error.get('type', status)}: {error.get('reason', '')}"
            else:
                reason = f"{status}: {error or ''}"
            refused.append((position, reason))
    METRICS.indexed.inc(indexed)
    METRICS.duplicates.inc(duplicates)
    return Outcome(retry, refused, duplicates)
