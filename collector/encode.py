"""Records -> the record contract (logferry/record.py): the one encoder of every record.

Every record is one UTF-8 JSON object per Kafka message. Its own fields come first; what
every record of one source shares (container, pod, host, input) is encoded once into a
byte suffix (`Static`), and each record is its own fields through orjson with that suffix
in place of the closing brace. That keeps the Python work per record small, which is most
of the collector's cost. Every producer of records goes through here:
- the file tail's general path: `Encoder.encode` (decode -> join -> encode),
- the fast path: `Encoder.template` / `level_template`, the same record as a %-template
  whose holes collector.fastpath fills per line,
- the forward listener: `ForwardEncoder.encode`, a forwarded message's events.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
from msgpack import ExtType, Timestamp

from collector.join import Record
from collector.metrics import METRICS
from collector.process import Processor

log = logging.getLogger("collector.forward")

CONTRACT_KEYS = ("container", "kubernetes", "host", "input")
"""Top-level objects built from metadata; the per-record fields never use these names."""

BATCH_BYTES = 1024 * 1024
"""Record bytes per batch of a forwarded message: one sink batch each, so what a message
holds encoded does not grow with its size."""
CUT_TAG_CHARS = 1024
"""A cut forwarded record keeps at most this much of its tag: a tag alone may not overflow
a record."""


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


def spelled(value: Any) -> Any:
    """A name read off the file system as JSON can hold it: Linux names are bytes, and
    Python keeps those that are not UTF-8 as lone surrogates, which JSON cannot; they are
    written as `\\xff`, so names that differ stay apart."""
    if type(value) is not str:
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


MAX_SHARED_BYTES = 64 * 1024
"""What a source's metadata may take in each of its records, against message.max.bytes."""
TRIMMED = ("kubernetes.annotations", "kubernetes.labels", "kubernetes.namespace_labels")
"""Left out, in this order, of metadata past MAX_SHARED_BYTES."""


def shared(meta: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(nest(meta))
    except orjson.JSONEncodeError:
        return orjson.dumps(nest({k: spelled(v) for k, v in meta.items()}))


class Static:
    """What every record of one source shares, encoded once: the suffix of its records."""

    __slots__ = ("suffix",)

    def __init__(self) -> None:
        self.suffix = b"}"

    def share(self, meta: dict[str, Any]) -> None:
        """The metadata every record from now on carries (dotted contract names)."""
        static = shared(meta)
        if len(static) > MAX_SHARED_BYTES:
            # An annotation may hold 256 KiB, and every record of the pod would carry it.
            METRICS.metadata_trimmed.inc()
            for key in TRIMMED:
                meta = {k: v for k, v in meta.items() if k != key}
                static = shared(meta)
                if len(static) <= MAX_SHARED_BYTES:
                    break
            log.warning(
                "pod metadata of %s past %d bytes: %s left out of its records",
                meta.get("kubernetes.pod.name", "a source"),
                MAX_SHARED_BYTES,
                ", ".join(TRIMMED[: TRIMMED.index(key) + 1]),
            )
        self.suffix = b"," + static[1:] if len(static) > 2 else b"}"

    def record(self, body: dict[str, Any], default: Callable[[Any], Any] | None = None) -> bytes:
        """One record: its own fields, then the shared ones."""
        return orjson.dumps(body, default=default)[:-1] + self.suffix


class Encoder(Static):
    """Encodes the records of one file.

    With a Processor, each record's text is parsed (mode: the container's parser), its
    level read and its secrets hidden (collector.process); without, the text is shipped as
    it is (the tests of the other stages use that).
    """

    __slots__ = (
        *("fingerprint", "level_template", "meta", "missing", "mode", "path", "processor"),
        "template",
    )

    def __init__(
        self,
        path: str,
        fingerprint: str,
        meta: dict[str, Any],
        processor: Processor | None = None,
        mode: str = "auto",
    ) -> None:
        super().__init__()
        self.path = spelled(path)
        self.fingerprint = fingerprint
        self.processor = processor
        self.mode = mode
        self.missing = False
        self.meta: dict[str, Any] = {}
        self.template = self.level_template = b""
        self.update(meta, missing=False)

    def update(self, meta: dict[str, Any], missing: bool) -> None:
        """New metadata for the file (e.g. once the API answered about its pod)."""
        self.meta = meta
        self.missing = missing
        self.share(meta)
        self.template = self.line_template(False)
        self.level_template = self.line_template(True)

    def rename(self, path: str) -> None:
        path = spelled(path)
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

    def encode(self, record: Record, scanned: bool = False) -> bytes:
        """`scanned`: see Processor.apply."""
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
            done = self.processor.apply(record.text, self.mode, scanned, "truncated" in tags)
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
        return self.record(body)


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Unencodable(ValueError):
    """A forwarded event that cannot become a record: skipped, counted by `reason`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


MAX_DEPTH = 250
"""Levels of a forwarded record kept: orjson writes 255 at most, and the record sits two or
three levels down its body (msgpack reads 1024)."""


def rfc3339(seconds: int, nanos: int | None) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}Z" if nanos is None else f"{stamp}.{nanos:09d}Z"


def jsonable(value: Any) -> Any:
    """What msgpack gives and orjson does not take; bytes only when they are UTF-8 (others
    go through Cleaner, which tells they were replaced)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, Timestamp):
        try:
            return rfc3339(value.seconds, value.nanoseconds)
        except (OverflowError, OSError, ValueError):
            return value.to_unix_nano()
    if isinstance(value, ExtType):
        return f"ext{value.code}:{value.data.hex()}"
    raise TypeError(f"{type(value).__name__} is not JSON")


class Cleaner:
    """A record orjson refused (text that is not UTF-8, keys that are not text, nesting
    too deep) made JSON-able; `replaced` tells that text was not UTF-8 (tag invalid_utf8)."""

    __slots__ = ("replaced",)

    def __init__(self) -> None:
        self.replaced = False

    def value(self, value: Any, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise Unencodable("unwritable", f"a record nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            return self.mapping(value, depth)
        if isinstance(value, list):
            return [self.value(v, depth + 1) for v in value]
        if isinstance(value, str | bytes):
            return self.text(value, "replace")
        if isinstance(value, Timestamp | ExtType):
            return jsonable(value)
        return value

    def mapping(self, value: dict[Any, Any], depth: int) -> dict[str, Any]:
        # Keys 7 and "7" (or bytes \xfe and the text "\xfe") spell alike once made text:
        # the later one is numbered ("7#2") so that no value replaces another.
        result: dict[str, Any] = {}
        for key, item in value.items():
            name = spelled = self.key(key, depth)
            number = 1
            while name in result:
                number += 1
                name = f"{spelled}#{number}"
            result[name] = self.value(item, depth + 1)
        return result

    def text(self, value: str | bytes, errors: str) -> str:
        data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
        try:
            return data.decode()
        except UnicodeDecodeError:
            self.replaced = True
            return data.decode("utf-8", errors)

    def key(self, key: Any, depth: int) -> str:
        # Bytes that are not UTF-8 written as \xe9, not U+FFFD: keys that differ stay apart.
        if isinstance(key, str | bytes):
            return self.text(key, "backslashreplace")
        return orjson.dumps(self.value(key, depth + 1)).decode()


class ForwardEncoder(Static):
    """Forwarded events -> records of the contract, with one connection's static fields.

    The event's `message` (else `log`) is the message; its other fields go under
    `object_path`; a record past `max_record_bytes` keeps only its message, cut.
    """

    __slots__ = ("leaf", "max_record_bytes", "parents", "prefix", "second")

    def __init__(self, object_path: str, max_record_bytes: int, meta: dict[str, Any]) -> None:
        super().__init__()
        *self.parents, self.leaf = object_path.split(".")
        self.max_record_bytes = max_record_bytes
        self.second = -1
        self.prefix = ""
        self.update(meta)

    def update(self, meta: dict[str, Any]) -> None:
        """New metadata for the connection's peer (e.g. once the API knows its pod)."""
        self.share(meta)

    def stamp(self, value: Any) -> str:
        """RFC 3339 UTC; one strftime per distinct second, which a chunk's events share."""
        if type(value) is int:
            seconds, nanos = value, None
        elif isinstance(value, Timestamp):
            seconds, nanos = value.seconds, value.nanoseconds
        elif type(value) is float and math.isfinite(value):
            seconds = math.floor(value)
            nanos = min(round((value - seconds) * 1e9), 999_999_999)
        else:
            raise Unencodable("no_time", f"event time is a {type(value).__name__}, not a time")
        if seconds != self.second:
            try:
                self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
            except (OverflowError, OSError, ValueError) as exc:
                raise Unencodable("no_time", f"event time {seconds} is out of range") from exc
            self.second = seconds
        return f"{self.prefix}Z" if nanos is None else f"{self.prefix}.{nanos:09d}Z"

    def encode(self, tag: str, entries: Iterable[Any], ids: str) -> Iterator[list[bytes]]:
        """The records of a message, in batches of about BATCH_BYTES."""
        record_of = self.record
        parents, leaf = self.parents, self.leaf
        values: list[bytes] = []
        size = 0
        skipped = 0
        for index, entry in enumerate(entries):
            # As Fluentd's skip_invalid_event: the rest of the message ships and its chunk is
            # answered; cut off instead, the client would send the same chunk for ever.
            try:
                value = self.event(tag, entry, f"{ids}-{index}", record_of, parents, leaf)
            except Unencodable as exc:
                METRICS.forward_skipped.labels(exc.reason).inc()
                if not skipped:
                    log.warning(
                        "forward: an event of a message tagged %r skipped: %s", tag[:200], exc
                    )
                skipped += 1
                continue
            values.append(value)
            size += len(value)
            if size >= BATCH_BYTES:
                yield values
                values, size = [], 0
        if values:
            yield values

    def event(
        self,
        tag: str,
        entry: Any,
        event_id: str,
        record_of: Callable[..., bytes],
        parents: list[str],
        leaf: str,
    ) -> bytes:
        """One `[time, map]` entry's record; Unencodable for what is no event."""
        if type(entry) is not list or len(entry) < 2 or type(entry[1]) is not dict:
            raise Unencodable("not_an_event", "an entry is not [time, map]")
        record = entry[1]
        try:
            body: dict[str, Any] = {"@timestamp": self.stamp(entry[0])}
        except Unencodable:
            # Fluentd stamps an event without a time with the time it came.
            body = {"@timestamp": now(), "tags": ["timestamp_invalid"]}
        cleaner = Cleaner()
        text = record.get("message")
        field = "message"
        if not isinstance(text, str | bytes):
            text, field = record.get("log"), "log"
        if isinstance(text, str | bytes):
            del record[field]
            body["message"] = cleaner.text(text, "replace").removesuffix("\n")
        body["event"] = {"id": event_id}
        body["fluent"] = {"tag": tag}
        if record:
            node = body
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = record
        try:
            value = record_of(body, jsonable)
        except orjson.JSONEncodeError:
            body = cleaner.value(body)
            if cleaner.replaced:
                METRICS.invalid_utf8.inc()
                body["tags"] = [*body.get("tags", ()), "invalid_utf8"]
            try:
                value = record_of(body)
            except orjson.JSONEncodeError as exc:
                raise Unencodable("unwritable", str(exc)) from exc
        return value if len(value) <= self.max_record_bytes else self.cut(body, tag)

    def cut(self, body: dict[str, Any], tag: str) -> bytes:
        """A record past max_record_bytes: the map's other fields go, the message is cut."""
        METRICS.truncated.inc()
        cleaner = Cleaner()
        text = cleaner.text(body.get("message", ""), "replace").encode()
        short: dict[str, Any] = {
            "@timestamp": body["@timestamp"],
            "message": "",
            "event": body["event"],
            "fluent": {"tag": cleaner.text(tag, "replace")[:CUT_TAG_CHARS]},
            "tags": [*body.get("tags", ()), "truncated"],
        }
        room = self.max_record_bytes - len(orjson.dumps(short)) + 1 - len(self.suffix)
        while True:
            short["message"] = text[: max(room, 0)].decode("utf-8", "ignore")
            value = self.record(short)
            over = len(value) - self.max_record_bytes
            if over <= 0 or room <= 0:
                return value
            # JSON escapes make text longer than its bytes, never shorter: cut that much more.
            room -= over
