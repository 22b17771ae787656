"""Seeded inputs for the record encoders, and what the encoders made of them, one line a case.

Forwarded events cover every kind of value msgpack gives (bin, ext, EventTime, non-text keys,
text that is not UTF-8, integers past 64 bits), every way a time is written, records past
the size cap and events that are not the protocol; file records cover the parser modes,
levels, redaction, tags, missing metadata and renames, and the fast path's templates.
tests/unit/test_one_encoder.py compares the encoders' bytes with tests/golden/encode/,
written by the encoders before they became one (`python -m tests.unit.test_one_encoder`
writes them again from the current code, for a change of the record that is meant).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from msgpack import ExtType, Timestamp

from collector.join import Record

FORWARD_CASES = 160
FILE_CASES = 160

METAS: list[dict[str, Any]] = [
    {},
    {"host.name": "node-a", "input.type": "forward"},
    {
        "host.name": "node-b",
        "input.type": "forward",
        "kubernetes.namespace": "shop",
        "kubernetes.pod.name": "cart-7d9f-abcde",
        "kubernetes.labels": {"app": "cart", "app.kubernetes.io/name": "cart"},
        "container.id": "c" * 64,
    },
    {"host.name": "nœud-ü", "kubernetes.annotations": {"note": 'say "hi"\n%s %d'}},
]
Output = Iterator[dict[str, Any]]
"""One JSON object per case: what the encoder made of it."""
TAGS = ["app", "app.web", "ünïcode.tag", "tag\udcff.raw", "t" * 1500, "%s%d"]
WORDS = ["GET /orders", "päyment", "日本語", "tab\there", 'quote"d', "back\\slash", "%s %d"]


class ForwardCase(NamedTuple):
    object_path: str
    max_record_bytes: int
    meta: dict[str, Any]
    tag: str
    entries: list[Any]
    ids: str
    update: dict[str, Any] | None
    """New metadata given to the encoder after its first batch."""


class FileCase(NamedTuple):
    path: str
    fingerprint: str
    meta: dict[str, Any]
    processed: bool
    mode: str
    missing: bool
    rename: str | None
    records: list[tuple[int, str, str, str, tuple[str, ...]]]
    """(offset, time, stream, text, tags) of each record."""


def text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 6)))


def scalar(rng: random.Random) -> Any:
    kind = rng.randrange(14)
    if kind == 0:
        return rng.randint(-(2**63), 2**63 - 1)
    if kind == 1:
        return rng.choice([2**70, 2**40, -(2**31), 2**64 - 1, 7, 8, 9, 10, 11, 12, 13])
    if kind == 2:
        return rng.choice([0.5, -1e300, float("nan"), float("inf"), 1.0000000001])
    if kind == 3:
        return rng.choice([True, False, None])
    if kind == 4:
        return text(rng).encode()
    if kind == 5:
        return b"\xff\xfe not utf-8"
    if kind == 6:
        return Timestamp(rng.randint(0, 2**33), rng.randint(0, 999_999_999))
    if kind == 7:
        return ExtType(rng.randint(1, 127), bytes(rng.randrange(256) for _ in range(5)))
    if kind == 8:
        return "surrogate \udcff\udc80 text"
    return text(rng)


def value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(10)
    if depth < 3 and kind == 0:
        return [value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if depth < 3 and kind == 1:
        keys: list[Any] = [text(rng) or "k", rng.randint(0, 9), b"bin-key", "ü"]
        return {rng.choice(keys): value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    return scalar(rng)


def event_time(rng: random.Random) -> Any:
    kind = rng.randrange(12)
    if kind < 4:
        return rng.randint(0, 2**32 - 1)
    if kind < 7:
        return Timestamp(rng.randint(0, 2**32 - 1), rng.randint(0, 999_999_999))
    if kind < 10:
        return rng.choice([1764210000.25, 0.9999999999, 0.0, 1e-9, rng.random() * 2e9])
    if kind == 10 and rng.randrange(3) == 0:
        return rng.choice([2**62, -(2**62), float("nan"), "2026-11-27", None, [1]])
    return rng.randint(1_700_000_000, 1_800_000_000)


def event(rng: random.Random) -> Any:
    if rng.randrange(40) == 0:
        return rng.choice([[1764210000], "not an entry", [1764210000, "not a map"]])
    record: dict[Any, Any] = {}
    which = rng.randrange(8)
    if which < 3:
        record["message"] = text(rng) + rng.choice(["", "\n", "\n\n"])
    elif which == 3:
        record["message"] = (text(rng) + "\n").encode() + rng.choice([b"", b"\xc3"])
    elif which == 4:
        record["log"] = text(rng) + "\n"
    elif which == 5:
        record["message"] = rng.randint(0, 9)
        record["log"] = text(rng).encode()
    elif which == 6:
        record["message"] = "x" * rng.choice([150, 600, 5000]) + "é" * rng.choice([0, 300])
    for _ in range(rng.randint(0, 4)):
        record[rng.choice(["user", "latency", "nested", "n", 7, b"raw"])] = value(rng)
    return [event_time(rng), record, *([{"x": 1}] if rng.randrange(10) == 0 else [])]


def forward_cases(seed: int = 16) -> Iterator[ForwardCase]:
    """New objects on every call: encoding takes message and log out of the events."""
    rng = random.Random(seed)
    for n in range(FORWARD_CASES):
        yield ForwardCase(
            rng.choice(["fluent.record", "app", "data.fields.x"]),
            rng.choice([300, 700, 2048, 1_000_000]),
            rng.choice(METAS),
            rng.choice(TAGS),
            [event(rng) for _ in range(rng.randint(1, 4))],
            f"{n:04x}-{rng.randrange(1 << 30):x}",
            rng.choice([None, None, None, *METAS]),
        )


LINES = [
    "plain words",
    '{"level":"error","msg":"boom","user":{"id":7},"tags":["a"]}',
    '{"message":"from message","severity":"WARN","n":1.5}',
    '  {"broken json',
    '{"deep":' * 25 + "1" + "}" * 25,
    'level=warn msg="logfmt here" user=alice latency=12ms',
    "E1127 02:00:00.000000       1 main.go:42] klog error",
    "INFO starting up",
    "password=hunter2 and more",
    "Authorization: Bearer eyJhbGciOi.eyJzdWIiOi.SflKxwRJSM",
    "key AKIAIOSFODNN7EXAMPLE seen",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
    "control \x00\x1b[31m red \x7f",
    "日本語のログ päyment",
    "",
    "%s %d %% percent",
]


PATHS = [
    "/var/log/pods/shop_cart_uid/app/0.log",
    "/var/lib/docker/containers/ab/ab-json.log",
    "/tmp/ü dir/%s.log",
    '/tmp/quote".log',
]
TAG_SETS: list[tuple[str, ...]] = [
    (),
    (),
    ("parse_error",),
    ("multiline",),
    ("truncated", "invalid_utf8"),
]


def file_cases(seed: int = 16) -> Iterator[FileCase]:
    rng = random.Random(seed)
    for n in range(FILE_CASES):
        meta = dict(rng.choice(METAS))
        if rng.randrange(2):
            meta["container.runtime"] = rng.choice(["docker", "cri"])
        records = []
        offset = 0
        if n == 0:
            # Past parse_max_chars: shipped, not parsed.
            long = '{"k":"' + "x" * 65_600 + '"}'
            records.append((0, "2026-11-27T02:00:00Z", "stdout", long, ()))
            offset = len(long) + 64
        for _ in range(rng.randint(1, 4)):
            line = rng.choice(LINES)
            if rng.randrange(3) == 0:
                line = f"{line} {text(rng)}"
            tags = rng.choice(TAG_SETS)
            stamp = (
                f"2026-11-27T02:{n % 60:02d}:{rng.randrange(60):02d}.{rng.randrange(10**9):09d}Z"
            )
            records.append((offset, stamp, rng.choice(["stdout", "stderr"]), line, tags))
            offset += len(line) + rng.randint(40, 90)
        yield FileCase(
            rng.choice(PATHS),
            f"{rng.randrange(1 << 64):016x}",
            meta,
            rng.randrange(4) != 0,
            rng.choice(["auto", "auto", "json", "logfmt", "none"]),
            rng.randrange(4) == 0,
            rng.choice([None, None, None, "/var/log/pods/shop_cart_uid/app/0.log.20261127-020000"]),
            records,
        )


def untimed(record: str) -> str:
    """An event without a time is stamped when it came: not a thing to compare."""
    if '"timestamp_invalid"' not in record:
        return record
    return re.sub(r'^\{"@timestamp":"[^"]*"', '{"@timestamp":"(when it came)"', record)


def forward_outputs(encoder: Callable[[str, int, dict[str, Any]], Any], protocol: type) -> Output:
    """What a forward encoder makes of each case: its records, and the error it stopped at
    as the connection would say it (`protocol`: the errors said by their text alone)."""
    for case in forward_cases():
        made = encoder(case.object_path, case.max_record_bytes, case.meta)
        out: list[str] = []
        error = None
        halves = [(case.entries[:1], case.ids), (case.entries[1:], f"{case.ids}-b")]
        try:
            for n, (entries, ids) in enumerate(halves):
                if n and case.update is not None:
                    made.update(case.update)
                for batch in made.encode(case.tag, entries, ids):
                    out += [untimed(value.decode()) for value in batch]
        except protocol as exc:
            error = str(exc)
        except (ValueError, TypeError, OverflowError) as exc:
            error = repr(exc)
        yield {"records": out, "error": error}


def file_outputs(encoder: Callable[..., Any], processor: Any) -> Output:
    """What a file encoder makes of each case: its templates and records, before and after
    a rename."""
    for case in file_cases():
        made = encoder(
            case.path, case.fingerprint, case.meta, processor if case.processed else None, case.mode
        )
        if case.missing:
            made.update(case.meta, missing=True)
        out: list[str] = []
        for rename in dict.fromkeys((None, case.rename)):
            if rename is not None:
                made.rename(rename)
            out += [made.template.decode(), made.level_template.decode()]
            out += [made.encode(Record(None, *record)).decode() for record in case.records]
        yield {"records": out}
