"""Records -> the JSON contract of ARCHITECTURE.md, one UTF-8 object per Kafka message.

What is the same for every record of a file (container, pod, host) is encoded once into a
byte suffix; per record only the few changing fields go through orjson. That keeps the
Python work per line small, which is most of the collector's cost.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from collector.join import Record

CONTRACT_KEYS = ("container", "kubernetes", "host", "input")
"""Top-level objects built from metadata; the per-record fields never use these names."""


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{"kubernetes.pod.name": "x"} -> {"kubernetes": {"pod": {"name": "x"}}}.

    Only the contract's own dotted names are split: label keys inside `kubernetes.labels`
    arrive as nested dicts already and keep their dots.
    """
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


class Encoder:
    """Encodes the records of one file."""

    __slots__ = ("fingerprint", "meta", "missing", "path", "suffix", "template")

    def __init__(self, path: str, fingerprint: str, meta: dict[str, Any]) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.missing = False
        self.meta: dict[str, Any] = {}
        self.suffix = b"}"
        self.template = b""
        self.update(meta, missing=False)

    def update(self, meta: dict[str, Any], missing: bool) -> None:
        """New metadata for the file (e.g. once the API answered about its pod)."""
        self.meta = meta
        self.missing = missing
        static = orjson.dumps(nest(meta))
        self.suffix = b"," + static[1:] if len(static) > 2 else b"}"
        self.template = self.line_template()

    def rename(self, path: str) -> None:
        if path != self.path:
            self.path = path
            self.template = self.line_template()

    def line_template(self) -> bytes:
        """The record of a plain line as one bytes %-template, for the fast path.

        Its five holes are time, message (JSON-escaped, without quotes), stream, and the
        offset twice (in `event.id` and `log.offset`): the same object `encode` builds.
        """
        tags = b',"tags":["metadata_missing"]' if self.missing else b""
        fixed = [
            b'{"@timestamp":"%s","message":"%s","stream":"%s","event":{"id":"',
            self.fingerprint.encode().replace(b"%", b"%%"),
            b'-%d"},"log":{"file":{"path":',
            orjson.dumps(self.path).replace(b"%", b"%%"),
            b'},"offset":%d}',
        ]
        return b"".join(fixed) + tags.replace(b"%", b"%%") + self.suffix.replace(b"%", b"%%")

    def encode(self, record: Record) -> bytes:
        tags = record.tags
        if self.missing:
            tags = (*tags, "metadata_missing")
        body: dict[str, Any] = {
            # A line the runtime's format could not be read from has no time of its own.
            "@timestamp": record.time or now(),
            "message": record.text,
            "stream": record.stream,
            "event": {"id": f"{self.fingerprint}-{record.offset}"},
            "log": {"file": {"path": self.path}, "offset": record.offset},
        }
        if tags:
            body["tags"] = tags
        return orjson.dumps(body)[:-1] + self.suffix


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
