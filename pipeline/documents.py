"""Kafka records -> bulk lines: the target index, `_id` = `event.id`, `event.ingested` added."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

PLACEHOLDER = re.compile(r"\{([^{}:]+)(?::([^{}]*))?\}")
UNSAFE = re.compile(r"[^a-z0-9_.+-]+")


class IndexName:
    """`logferry-{kubernetes.namespace}-{@timestamp:%Y.%m.%d}` compiled once."""

    def __init__(self, pattern: str) -> None:
        self.parts: list[str | tuple[tuple[str, ...], str | None]] = []
        end = 0
        for match in PLACEHOLDER.finditer(pattern):
            self.parts.append(pattern[end : match.start()])
            field, form = match.group(1), match.group(2)
            if form is not None and field != "@timestamp":
                raise ValueError(f"only {{@timestamp:FORMAT}} takes a format, not {field}")
            self.parts.append((tuple(field.split(".")), form))
            end = match.end()
        self.parts.append(pattern[end:])
        literal = PLACEHOLDER.sub("", pattern)
        if "{" in literal or "}" in literal:
            raise ValueError(f"unbalanced braces in index pattern {pattern!r}")
        if literal != literal.lower():
            raise ValueError(f"index names are lower case: {pattern!r}")

    def __call__(self, doc: dict[str, Any]) -> str:
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            path, form = part
            value: Any = doc
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            if form is not None:
                out.append(day(value, form))
            else:
                out.append(UNSAFE.sub("_", str(value).lower()) if value else "unknown")
        return "".join(out)


def day(stamp: Any, form: str) -> str:
    """The date part of an RFC 3339 stamp in `form` (%Y %m %d), without parsing the time."""
    if not isinstance(stamp, str) or len(stamp) < 10:
        return "unknown"
    return form.replace("%Y", stamp[0:4]).replace("%m", stamp[5:7]).replace("%d", stamp[8:10])


class Document(NamedTuple):
    index: str
    id: str | None
    action: bytes
    """The `create` line of the bulk body, with its newline."""
    source: bytes
    """The document with its newline."""


class Undecodable(ValueError):
    """A Kafka record that is not a JSON object: it goes to the dead-letter topic."""


def document(value: bytes, index_name: IndexName, ingested: str) -> Document:
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise Undecodable(f"not JSON: {exc}") from exc
    if type(doc) is not dict:
        raise Undecodable("not a JSON object")
    event = doc.get("event")
    if type(event) is not dict:
        event = doc["event"] = {}
    event["ingested"] = ingested
    index = index_name(doc)
    doc_id = event.get("id")
    meta: dict[str, Any] = {"_index": index}
    if isinstance(doc_id, str) and doc_id:
        meta["_id"] = doc_id
    else:
        doc_id = None
    return Document(
        index,
        doc_id,
        orjson.dumps({"create": meta}, option=orjson.OPT_APPEND_NEWLINE),
        orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE),
    )


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
