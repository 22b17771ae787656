"""Every record goes through collector.encode, and its bytes are what they were before the
file and forward encoders became one: compared, case by case, with what the two encoders
wrote for the seeded corpus of tests/unit/encoding_corpus.py (tests/golden/encode/)."""

from __future__ import annotations

import gzip
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.encode import Encoder, ForwardEncoder, Static, Unencodable
from collector.forward_framing import ProtocolError
from collector.metrics import METRICS
from collector.process import Processor
from collector.structured import Limits
from tests.unit.encoding_corpus import file_outputs, forward_outputs

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "encode"
PROCESSOR = Processor(Limits(64 * 1024, 10, 500), [], True)
"""The settings' defaults: parsing limits and the built-in redaction rules."""


def outputs(kind: str) -> Iterator[dict[str, Any]]:
    if kind == "forward":
        return forward_outputs(ForwardEncoder, (ProtocolError, Unencodable))
    return file_outputs(Encoder, PROCESSOR)


def golden(kind: str) -> list[dict[str, Any]]:
    with gzip.open(GOLDEN / f"{kind}.jsonl.gz") as f:
        return [orjson.loads(line) for line in f]


def write(kind: str, rows: Iterable[dict[str, Any]]) -> None:
    with (
        open(GOLDEN / f"{kind}.jsonl.gz", "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f,
    ):
        for row in rows:
            f.write(orjson.dumps(row) + b"\n")


@pytest.mark.parametrize("kind", ["file", "forward"])
def test_records_are_byte_for_byte_what_they_were(kind: str) -> None:
    before = golden(kind)
    now = list(outputs(kind))
    assert len(now) == len(before)
    for case, (was, made) in enumerate(zip(before, now, strict=True)):
        assert made == was, f"{kind} case {case}"


def test_the_corpus_reaches_what_records_can_hold() -> None:
    """The comparison is only as good as its cases: every kind of record is among them."""
    forward = [r for row in golden("forward") for r in row["records"]]
    files = [r for row in golden("file") for r in row["records"]]
    for needle in ('"tags":["truncated"]', '"fluent":{"tag"', '"record":{', '"app":{', "ext"):
        assert any(needle in r for r in forward), needle
    for needle in ('"timestamp_invalid"', '"invalid_utf8"', '"tags":["timestamp_invalid","tr'):
        assert any(needle in r for r in forward), needle
    skipped = METRICS.forward_skipped
    before = [skipped.labels(reason)._value.get() for reason in ("not_an_event", "unwritable")]
    list(outputs("forward"))
    after = [skipped.labels(reason)._value.get() for reason in ("not_an_event", "unwritable")]
    assert after[0] > before[0]
    assert after[1] > before[1]
    for needle in ('"json":{', '"original":', '"level":"error"', "redacted", "metadata_missing"):
        assert any(needle in r for r in files), needle
    assert any('"level":"%s"' in r for r in files), "the fast path's templates"


def test_every_encoder_shares_the_one_static_suffix() -> None:
    meta = {"host.name": "node-a", "kubernetes.pod.name": "cart"}
    file, forward = Encoder("/p", "f", meta), ForwardEncoder("fluent.record", 4096, meta)
    assert isinstance(file, Static)
    assert isinstance(forward, Static)
    assert (
        file.suffix
        == forward.suffix
        == b',"host":{"name":"node-a"},"kubernetes":{"pod":{"name":"cart"}}}'
    )


if __name__ == "__main__":
    # A change of the record that is meant: the golden files from the current encoders.
    for name in sys.argv[1:] or ["file", "forward"]:
        write(name, outputs(name))


def test_metadata_too_large_for_a_record_loses_its_annotations_then_its_labels() -> None:
    """An annotation may hold 256 KiB, and every record of the pod carried it: with a
    smaller message.max.bytes every record was refused, and with the default a record of
    much text too. Annotations go first, labels next; counted."""
    before = METRICS.metadata_trimmed._value.get()
    meta = {
        "kubernetes.pod.name": "cart",
        "kubernetes.labels": {"app": "web"},
        "kubernetes.annotations": {"big": "x" * 200_000, "small": "y"},
    }
    encoder = Encoder("/p", "f", meta)
    record = orjson.loads(encoder.template.replace(b"%s", b"s").replace(b"%d", b"1"))
    assert record["kubernetes"] == {"pod": {"name": "cart"}, "labels": {"app": "web"}}
    assert len(encoder.suffix) < 64 * 1024
    huge = {**meta, "kubernetes.labels": {f"l{n}": "v" * 1000 for n in range(100)}}
    forward = ForwardEncoder("fluent.record", 1 << 20, huge)
    assert orjson.loads(b"{" + forward.suffix[1:]) == {"kubernetes": {"pod": {"name": "cart"}}}
    assert METRICS.metadata_trimmed._value.get() == before + 2
