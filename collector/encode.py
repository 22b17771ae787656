"""Records -> the record contract (logferry/record.py), one UTF-8 object per Kafka message.

What is the same for every record of a file (container, pod, host) is encoded once into a
byte suffix; per record only the few changing fields go through orjson. That keeps the
Python work per line small, which is most of the collector's cost.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from collector.join import Record
from collector.process import Processor

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
    """Encodes the records of one file.

    With a Processor, each record's text is parsed (mode: the container's parser), its
    level read and its secrets hidden (collector.process); without, the text is shipped as
    it is (the tests of the other stages use that).
    """

    __slots__ = (
        *("fingerprint", "level_template", "meta", "missing", "mode", "path", "processor"),
        *("suffix", "template"),
    )

    def __init__(
        self,
        path: str,
        fingerprint: str,
        meta: dict[str, Any],
        processor: Processor | None = None,
        mode: str = "auto",
    ) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.processor = processor
        self.mode = mode
        self.missing = False
        self.meta: dict[str, Any] = {}
        self.suffix = b"}"
        self.template = self.level_template = b""
        self.update(meta, missing=False)

    def update(self, meta: dict[str, Any], missing: bool) -> None:
        """New metadata for the file (e.g. once the API answered about its pod)."""
        self.meta = meta
        self.missing = missing
        static = orjson.dumps(nest(meta))
        self.suffix = b"," + static[1:] if len(static) > 2 else b"}"
        self.template = self.line_template(False)
        self.level_template = self.line_template(True)

    def rename(self, path: str) -> None:
        if path != self.path:
            self.path = path
            self.template = self.line_template(False)
            self.level_template = self.line_template(True)

    def line_template(self, level: bool) -> bytes:
        """The record of a plain line as one bytes %-template, for the fast path.

        Its five holes are time, message (JSON-escaped, without quotes), stream, and the
        offset twice (in `event.id` and `log.offset`), and with `level` a sixth, the
        `log.level`: the same object `encode` builds.
        """
        tags = b',"tags":["metadata_missing"]' if self.missing else b""
        fixed = [
            b'{"@timestamp":"%s","message":"%s","stream":"%s","event":{"id":"',
            self.fingerprint.encode().replace(b"%", b"%%"),
            b'-%d"},"log":{"file":{"path":',
            orjson.dumps(self.path).replace(b"%", b"%%"),
            b'},"offset":%d,"level":"%s"}' if level else b'},"offset":%d}',
        ]
        return b"".join(fixed) + tags.replace(b"%", b"%%") + self.suffix.replace(b"%", b"%%")

    def encode(self, record: Record) -> bytes:
        tags = record.tags
        if self.missing:
            tags = (*tags, "metadata_missing")
        event: dict[str, Any] = {"id": f"{self.fingerprint}-{record.offset}"}
        log: dict[str, Any] = {"file": {"path": self.path}, "offset": record.offset}
        body: dict[str, Any] = {
            # A line the runtime's format could not be read from has no time of its own.
            "@timestamp": record.time or now(),
            "message": record.text,
            "stream": record.stream,
            "event": event,
            "log": log,
        }
        if self.processor is not None:
            done = self.processor.apply(record.text, self.mode)
            body["message"] = done.message
            if done.original is not None:
                event["original"] = done.original
            if done.level is not None:
                log["level"] = done.level
            if done.fields is not None:
                body["json"] = done.fields
            if done.redacted:
                tags = (*tags, "redacted")
        if tags:
            body["tags"] = tags
        return orjson.dumps(body)[:-1] + self.suffix


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
