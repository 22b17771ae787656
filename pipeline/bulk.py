"""One bulk request to Elasticsearch, and what became of each document in it.

Items are sorted three ways: done (created, or refused as a duplicate of a document already
there, which with `_id` = `event.id` means a replay), retry (the cluster was busy or
failing), and refused for their content (mapping errors, too large), which belong in the
dead-letter topic rather than in an endless retry.
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
    METRICS.bulk_seconds.observe(time.perf_counter() - started)
    if not reply.get("errors"):
        METRICS.indexed.inc(count)
        return Outcome([], [], 0)
    return sort(reply.body["items"])


def sort(items: list[dict[str, Any]]) -> Outcome:
    retry: list[int] = []
    refused: list[tuple[int, str]] = []
    duplicates = 0
    indexed = 0
    for position, item in enumerate(items):
        result = next(iter(item.values()))
        status = result.get("status", 500)
        if status < 300:
            indexed += 1
        elif status == 409:
            duplicates += 1
        elif status == 429 or status >= 500:
            retry.append(position)
        else:
            error = result.get("error") or {}
            refused.append((position, f"{error.get('type', status)}: {error.get('reason', '')}"))
    METRICS.indexed.inc(indexed)
    METRICS.duplicates.inc(duplicates)
    return Outcome(retry, refused, duplicates)
