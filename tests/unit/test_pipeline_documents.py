from __future__ import annotations

import gc
import json
import re
from datetime import date
from typing import Any

import orjson
import pytest
from confluent_kafka import Message
from hypothesis import example, given, settings
from hypothesis import strategies as st

from logferry.settings import SettingError
from pipeline import bulk
from pipeline.config import parse
from pipeline.documents import (
    NAMES,
    Document,
    IndexName,
    Undecodable,
    document,
    documents,
    kafka_id,
    valid_stamp,
)
from pipeline.indexer import Entry, client

NAME = IndexName("logferry-{kubernetes.namespace}-{@timestamp:%Y.%m.%d}")


def test_index_per_namespace_per_day() -> None:
    doc = {"@timestamp": "2026-11-27T23:59:59.999999999Z", "kubernetes": {"namespace": "Shop"}}
    assert NAME(doc) == "logferry-shop-2026.11.27"


@pytest.mark.parametrize(
    ("pattern", "name"),
    [
        ("logs", "logs"),
        ("logs-{stream}", "logs-stderr"),
        ("{kubernetes.namespace}.{stream}.{@timestamp:%Y}", "shop.stderr.2026"),
        ("a%b-{stream}", "a%b-stderr"),
    ],
)
def test_index_patterns_with_any_number_of_fields(pattern: str, name: str) -> None:
    doc = {
        "@timestamp": "2026-11-27T23:59:59Z",
        "stream": "stderr",
        "kubernetes": {"namespace": "shop"},
    }
    assert IndexName(pattern)(doc) == name


def test_records_without_namespace_or_time_still_get_an_index() -> None:
    assert NAME({"message": "x"}) == "logferry-unknown-unknown"
    for stamp in ("2026-W48-1T00:00:00Z", "20261127T000000Z", "not . t.me", "٢٠٢٦-11-27"):
        assert NAME({"@timestamp": stamp}) == "logferry-unknown-unknown"


def test_remembered_names_follow_the_values_of_every_record() -> None:
    """The names are remembered under the fields' values: each record, in turn, must still
    get the name its own values give, whatever came before it."""
    name = IndexName("logs-{stream}-{kubernetes.namespace}-{@timestamp:%Y.%m}")
    day = "2026-11-27T00:00:00Z"
    cases = [
        ({"stream": "a", "kubernetes": {"namespace": "x"}, "@timestamp": day}, "logs-a-x-2026.11"),
        ({"stream": 1, "kubernetes": {"namespace": "x"}, "@timestamp": day}, "logs-1-x-2026.11"),
        ({"stream": True, "kubernetes": {"namespace": "x"}}, "logs-true-x-unknown"),
        ({"stream": 1.0, "kubernetes": {"namespace": "x"}}, "logs-1.0-x-unknown"),
        ({"stream": "1", "kubernetes": ["x"], "@timestamp": "2026"}, "logs-1-unknown-unknown"),
        ({"stream": {"a": 1}, "kubernetes": "x", "@timestamp": 20}, "logs-_a_1_-unknown-unknown"),
        ({"stream": "A b", "kubernetes": {"namespace": None}}, "logs-a_b-unknown-unknown"),
        ({"stream": "a", "kubernetes": {"namespace": "x"}, "@timestamp": day}, "logs-a-x-2026.11"),
        (
            {"stream": "", "kubernetes": {"namespace": "Y"}, "@timestamp": "2027-01-02"},
            "logs-unknown-y-2027.01",
        ),
    ]
    for _ in range(2):
        assert [name(doc) for doc, _ in cases] == [expected for _, expected in cases]
    assert NAME({"@timestamp": day, "kubernetes": {"namespace": "x"}}) == "logferry-x-2026.11.27"


def test_document_keeps_the_record_adds_ingested_and_uses_event_id() -> None:
    value = orjson.dumps(
        {"@timestamp": "2026-11-27T02:00:00Z", "message": "hi", "event": {"id": "abc-12"}}
    )
    doc = document(value, NAME, "2026-11-27T02:00:01.000000Z")
    action, source, end = doc.lines.split(b"\n")
    assert orjson.loads(action) == {
        "create": {"_index": "logferry-unknown-2026.11.27", "_id": "abc-12"}
    }
    assert orjson.loads(source) == {
        "@timestamp": "2026-11-27T02:00:00Z",
        "message": "hi",
        "event": {"id": "abc-12", "ingested": "2026-11-27T02:00:01.000000Z"},
    }
    assert end == b""


@pytest.mark.parametrize("value", [b"not json", b"[1]", b"", None])
def test_undecodable_records_are_refused_with_a_reason(value: bytes | None) -> None:
    """None is a Kafka record without a value, as the consumer hands it over."""
    with pytest.raises(Undecodable, match=r"^not"):
        document(value, NAME, "now")


def test_bulk_items_are_sorted_into_done_retry_and_refused() -> None:
    items = [
        {"create": {"status": 201}},
        {"create": {"status": 409, "error": {"type": "version_conflict_engine_exception"}}},
        {"create": {"status": 429, "error": {"type": "es_rejected_execution_exception"}}},
        {"create": {"status": 400, "error": {"type": "document_parsing_exception", "reason": "x"}}},
        {"create": {"status": 503, "error": {"type": "unavailable_shards_exception"}}},
    ]
    outcome = bulk.sort(items)
    assert outcome.retry == [2, 4]
    assert outcome.refused == [(3, "document_parsing_exception: x")]
    assert outcome.duplicates == 1


@pytest.mark.parametrize(
    "error",
    [
        {"type": "index_closed_exception", "reason": "closed"},
        {"type": "cluster_block_exception", "reason": "blocked"},
        {
            "type": "validation_exception",
            "reason": "Validation Failed: 1: this action would add [2] shards, but this "
            "cluster currently has [1000]/[1000] maximum normal shards open;",
        },
    ],
)
def test_items_refused_for_the_clusters_state_are_sent_again(error: dict[str, str]) -> None:
    """Whatever their status (400, 404): an operator mends them, not the document."""
    for status in (400, 404):
        assert bulk.sort([{"create": {"status": status, "error": error}}]).retry == [0]


def test_bulk_replies_are_read_in_full_only_when_something_failed() -> None:
    replies = bulk.Replies()
    clean = b'{"errors":false,"items":[{"create":{"status":201}},{"create":{"status":201}}]}'
    assert replies.loads(clean) == {"errors": False}
    failed = b'{"errors":true,"items":[{"create":{"status":201}},{"create":{"status":409}}]}'
    assert bulk.sort(replies.loads(failed)["items"]).duplicates == 1
    assert replies.loads(b'{"acknowledged":true}') == {"acknowledged": True}


def test_bulk_bodies_are_sent_without_a_copy() -> None:
    """Each body is 5 MB: the client's serializer must pass ours on as they are."""
    es = client(
        parse(["run", "--bootstrap-servers", "k:9092", "--elasticsearch-url", "http://x:9200"])
    )
    body = b'{"create":{"_index":"a"}}\n{"message":"x"}\n'
    for mimetype in ("application/x-ndjson", "application/vnd.elasticsearch+x-ndjson"):
        assert es.transport.serializers.dumps(body, mimetype=mimetype) is body
    assert es.transport.serializers.dumps([{"a": 1}], mimetype="application/x-ndjson") == (
        b'{"a":1}\n'
    )


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["run", "--elasticsearch-url", "http://x"], "bootstrap_servers"),
        (["run", "--bootstrap-servers", "k:9092"], "elasticsearch_url"),
        (["setup", "--elasticsearch-url", "es:9200"], "elasticsearch_url"),
        (["run", "--elasticsearch-url", "http://x", "--index", "Logs-{a"], "index"),
        (
            [
                "run",
                "--bootstrap-servers",
                "k:1",
                "--elasticsearch-url",
                "http://x",
                "--bulk-bytes",
                "0",
            ],
            "bulk_bytes",
        ),
        (["setup", "--elasticsearch-url", "http://x", "--group", "g"], "--group"),
        (["serve"], "command"),
    ],
)
def test_wrong_settings_name_the_setting(
    argv: list[str], named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("ELASTICSEARCH_URL", raising=False)
    with pytest.raises(SettingError, match=named):
        parse(argv)


def test_ingested_is_added_whatever_the_shape_of_the_record() -> None:
    at = {"@timestamp": "2026-11-27T00:00:00Z"}
    shapes = [
        {**at, "message": "no event"},
        {**at, "message": "empty event", "event": {}},
        {**at, "message": "has it", "event": {"id": "a", "ingested": "2020-01-01T00:00:00Z"}},
        {**at, "message": 'text with "event":{ inside', "event": {"id": "b"}},
        {**at, "message": "nested", "labels": {"event": {"x": 1}}, "event": {"id": "c"}},
    ]
    for shape in shapes:
        doc = document(orjson.dumps(shape), NAME, "2026-11-27T00:00:00Z")
        action, source_line, end = doc.lines.split(b"\n")
        assert orjson.loads(action)["create"]["_index"] == doc.index
        assert end == b""
        source = orjson.loads(source_line)
        assert source["event"]["ingested"] == "2026-11-27T00:00:00Z"
        assert {k: v for k, v in source.items() if k != "event"} == {
            k: v for k, v in shape.items() if k != "event"
        }
    spaced = b'{"message": "x", "event": {"id": "d"}}'
    source = document(spaced, NAME, "t").lines.split(b"\n")[1]
    assert orjson.loads(source)["event"] == {"id": "d", "ingested": "t"}


@pytest.mark.parametrize(
    "value",
    [
        b'{"event":{"id":"a"},\n"message":"x","@timestamp":"2026-11-27T00:00:00Z"}',
        b'{"event":{"id":"a"},"message":"x","@timestamp":"2026-11-27T00:00:00Z"}\n',
        b'{"event":{"id":"a"},\r\n"message":"x","@timestamp":"2026-11-27T00:00:00Z"}',
    ],
)
def test_a_record_with_line_breaks_between_its_fields_is_one_line_of_the_bulk(
    value: bytes,
) -> None:
    """The bulk body is split at line breaks: JSON may hold them between its tokens, and a
    record sent as it came would be read by Elasticsearch as two broken lines."""
    action, source, end = document(value, NAME, "t").lines.split(b"\n")
    assert orjson.loads(action)["create"]["_id"] == "a"
    assert orjson.loads(source) == {
        "event": {"id": "a", "ingested": "t"},
        "message": "x",
        "@timestamp": "2026-11-27T00:00:00Z",
    }
    assert end == b""


SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["event", '"event":{', "ünï", "a\nb", "2026-11-27T02:00:00Z"])
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["event", "id", "x", "namespace"]), inner, max_size=3)
    ),
    max_leaves=8,
)
RECORDS = st.fixed_dictionaries(
    {},
    optional={
        "@timestamp": st.sampled_from(["2026-11-27T02:00:00Z", "2026", 7]) | SCALARS,
        "message": SCALARS,
        "event": st.fixed_dictionaries(
            {}, optional={"id": st.text(max_size=5) | SCALARS, "ingested": SCALARS, "x": VALUES}
        )
        | VALUES,
        "kubernetes": st.fixed_dictionaries({}, optional={"namespace": SCALARS, "x": VALUES})
        | VALUES,
        "stream": st.sampled_from(["stdout", "stderr"]) | SCALARS,
        "labels": VALUES,
    },
)
LAYOUTS = st.sampled_from(
    [
        orjson.dumps,
        lambda r: json.dumps(r).encode(),
        lambda r: json.dumps(r, ensure_ascii=False).encode(),
        lambda r: json.dumps(r, indent=1).encode(),
        lambda r: b"  " + orjson.dumps(r) + b"\n",
    ]
)


PATTERNS = [
    NAME,
    IndexName("x-{event}"),
    IndexName("x-{event.ingested}-{event.id}"),
    IndexName("{kubernetes}-{kubernetes.namespace}-{message}"),
    IndexName("logs-{stream}-{kubernetes.namespace}-{@timestamp:%Y.%m}"),
    IndexName("x-{kubernetes.namespace}"),
]


def kept_event(stray: Any) -> dict[str, Any]:
    """The `event` of a record whose own is no object: that kept as text."""
    if stray is None:
        return {}
    return {"original_event": stray if type(stray) is str else orjson.dumps(stray).decode()}


def with_time_mended(record: dict[str, Any], ingested: str) -> None:
    """What the pipeline makes of a record whose @timestamp is not a date (without a Kafka
    time: then the time of indexing)."""
    if "@timestamp" in record and valid_stamp(record["@timestamp"]):
        return
    if "@timestamp" in record:
        stamp = record["@timestamp"]
        event = record.get("event")
        if type(event) is not dict:
            event = record["event"] = kept_event(event)
        event["original_timestamp"] = stamp if type(stamp) is str else orjson.dumps(stamp).decode()
    record["@timestamp"] = ingested
    tags = record.get("tags")
    if type(tags) is list:
        tags.append("timestamp_invalid")
    elif type(tags) is str:
        record["tags"] = [tags, "timestamp_invalid"]
    elif tags is None:
        record["tags"] = ["timestamp_invalid"]


def assert_document_is_the_record(value: bytes, name: IndexName) -> None:
    """The document of `value` is the record as orjson reads it, with `event.ingested`
    added (and its time mended where it was none), on one line of the bulk body, named
    from the record as it came; or, where orjson reads no JSON object, refused."""
    try:
        expected = orjson.loads(value)
    except orjson.JSONDecodeError:
        expected = None
    if type(expected) is not dict:
        with pytest.raises(Undecodable):
            document(value, name, "T")
        return
    try:
        doc = document(value, name, "T")
    except Undecodable:
        # Only a record orjson cannot write again (255 levels deep at most) may be refused.
        with pytest.raises(orjson.JSONEncodeError):
            orjson.dumps(expected)
        return
    assert_is_the_record(doc, value, name)


def assert_is_the_record(doc: Document, value: bytes, name: IndexName) -> None:
    expected = orjson.loads(value)
    action, source, end = doc.lines.split(b"\n")
    with_time_mended(expected, "T")
    index = name(expected)
    event = expected.get("event")
    if type(event) is not dict:
        event = expected["event"] = kept_event(event)
    event["ingested"] = "T"
    assert orjson.loads(source) == expected
    assert end == b""
    meta = orjson.loads(action)["create"]
    assert meta["_index"] == index == doc.index
    doc_id = event.get("id")
    assert meta.get("_id") == (doc_id if type(doc_id) is str and doc_id else None)


@settings(max_examples=600, deadline=None)
@given(RECORDS, LAYOUTS, st.sampled_from(PATTERNS))
@example(
    {"event": {"id": "a"}, "labels": {"event": {"x": 1}}}, lambda r: json.dumps(r).encode(), NAME
)
@example({"event": {"id": "a"}, "m": '"event":{'}, orjson.dumps, NAME)
@example({'a "event': {"q": 1}, "event": {"id": "z"}}, orjson.dumps, NAME)
@example({"event": {"id": "a"}, "m": "caf\u00e9"}, orjson.dumps, NAME)
def test_every_record_becomes_itself_with_ingested_added(
    record: dict[str, Any], layout, name: IndexName
) -> None:
    """Records of the collector's usual shape take a cheaper road than the rest: whatever
    the shape and the layout of its JSON, and the index pattern, a record's document is the
    record as it was, with `event.ingested` added."""
    assert_document_is_the_record(layout(record), name)


def written_again(value: bytes) -> bool:
    """Whether the record is a JSON object orjson can also write (255 levels deep at most)."""
    try:
        return type(orjson.loads(value)) is dict and bool(orjson.dumps(orjson.loads(value)))
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return False


STAMPS = st.sampled_from(
    [
        "1970-01-02T00:00:00Z",
        "1970-01-02T00:00:00+24:00",
        "2026-11-27T02:00:00Z",
        "2026-11-27T02:00:00.123456789Z",
        "2026-11-27T02:00:00.1234567890Z",
        "2026-11-27T02:00:00+05:30",
        "2026-11-27T02:00:00.5+25:00",
        "2026-11-27T02:00:01Z",
        "2026-11-28T02:00:00Z",
        "2026-02-30T02:00:00Z",
        "2026-02-30T02:00:00.1Z",
        "2027-01-01T00:00:00.1Z",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.builds(lambda r, t: {**r, "@timestamp": t}, RECORDS, STAMPS), LAYOUTS),
        max_size=8,
    ),
    st.sampled_from(PATTERNS),
)
@example(
    [
        ({"@timestamp": "2026-11-27T02:00:00Z", "event": {"id": "a"}}, orjson.dumps),
        ({"@timestamp": "2026-11-27T02:00:00.5+25:00", "event": {"id": "b"}}, orjson.dumps),
        ({"@timestamp": "2026-11-28T02:00:00Z", "event": {"id": "c"}}, orjson.dumps),
        ({"@timestamp": "2026-02-30T02:00:00Z", "event": {"id": "d"}}, orjson.dumps),
        ({"@timestamp": "2026-02-30T02:00:00.1Z", "event": {"id": "e"}}, orjson.dumps),
    ],
    NAME,
)
def test_each_record_of_a_batch_becomes_itself(
    batch: list[tuple[dict[str, Any], Any]], name: IndexName
) -> None:
    """documents() reads a batch at once and keeps, from one record to the next, the second
    of the last valid time and the names: each document must still be its own record's,
    with its own time checked and its own index, as document() gives it alone."""
    values = [v for v in (layout(record) for record, layout in batch) if written_again(v)]
    docs = documents(values, name, "T")
    assert len(docs) == len(values)
    for doc, value in zip(docs, values, strict=True):
        assert_is_the_record(doc, value, name)
        assert doc == document(value, name, "T")


@pytest.mark.parametrize(
    "value",
    [
        # Fields that need escaping where the document's id and index are written.
        b'{"event":{"id":"a\\"b\\\\c\\u00e9\\u2028\\n"},"kubernetes":{"namespace":"A\\"b"},'
        b'"@timestamp":"2026-11-27T02:00:00Z"}',
        '{"event":{"id":"é\\"ü"},"kubernetes":{"namespace":"café"},'
        '"@timestamp":"2026-11-27T02:00:00Z"}'.encode(),
        # The only `"event"` is not the record's: no event at the top, or an empty one.
        b'{"x":{"event":{"id":"a"}},"@timestamp":"2026-11-27T02:00:00Z"}',
        b'{"event":{},"@timestamp":"2026-11-27T02:00:00Z"}',
        b'{"event":{ "id":"a"},"@timestamp":"2026-11-27T02:00:00Z"}',
        # Two events at the top: the last is the record's, as orjson reads it.
        b'{"event":{"id":"a"},"event":{"id":"b"},"@timestamp":"2026-11-27T02:00:00Z"}',
        b'{"event":{"id":"a"},"x":{"event":{"id":"b"}},"@timestamp":"2026-11-27T02:00:00Z"}',
    ],
)
def test_records_whose_event_or_fields_are_unusual(value: bytes) -> None:
    for name in PATTERNS:
        assert_document_is_the_record(value, name)
        (doc,) = documents([value], name, "T")
        assert_is_the_record(doc, value, name)


NESTED = b'{"event":{"id":"a"},"m":%s}'


@pytest.mark.parametrize(
    "value",
    [
        NESTED % (b"[" * 300 + b"]" * 300),
        b'{"m":%s}' % (b"[" * 300 + b"]" * 300),
        NESTED % (b"[" * 1000 + b"]" * 1000),
        NESTED % (b"[" * 1100 + b"]" * 1100),
        b'{"event":{"id":"a"},"kubernetes":{"namespace":18446744073709551616}}',
        b'{"event":{"id":"a"},"message":-9223372036854775809}',
        b'{"event":5}',
        b'{"event":{"id":"a"}}',
        b'{"event":{"id":"a","ingested":"then"},"kubernetes":{"namespace":["a"]}}',
    ],
)
def test_records_at_the_edges_of_the_cheaper_road(value: bytes) -> None:
    """Deep nesting, integers beyond 64 bits in the name's fields, an event that is not an
    object, and patterns that name the event itself."""
    for name in PATTERNS:
        assert_document_is_the_record(value, name)


@pytest.mark.parametrize(
    "value",
    [
        b'{"event":{"id":"a"}}garbage',
        b'{"event":{"id":"a"},"m":"\xff"}',
        b'{"event":{"id":"a"},"m":"\xc0\xaf"}',
        b'{"event":{"id":"a"},"m":"\\ud800"}',
        b'{"event":{"id":"a"},"m":"\x01"}',
        b'{"event":{"id":"a"},"m":[1,}',
    ],
)
def test_records_that_look_usual_but_are_not_json_are_refused(value: bytes) -> None:
    """Invalid UTF-8 among them: Elasticsearch would index an overlong encoding as if it
    were another character."""
    with pytest.raises(Undecodable):
        document(value, NAME, "T")


KAFKA_TIME = (1, 1_795_000_000_123)
"""(TIMESTAMP_CREATE_TIME, ms): 2026-11-18T11:06:40.123Z."""


@pytest.mark.parametrize(
    ("stamp", "original"),
    [
        ("not . t.me", "not . t.me"),
        ("2026-13-01T00:00:00Z", "2026-13-01T00:00:00Z"),
        ("2026-02-30T00:00:00Z", "2026-02-30T00:00:00Z"),
        ("1969-12-31T23:59:59Z", "1969-12-31T23:59:59Z"),
        ("2026-11-27", "2026-11-27"),
        ("2026-11-27T02:00:00+18:01", "2026-11-27T02:00:00+18:01"),
        ("2026-11-27T02:00:00-23:59", "2026-11-27T02:00:00-23:59"),
        (1_795_000_000, "1795000000"),
        ({"a": 1}, '{"a":1}'),
        (None, "null"),
    ],
)
def test_a_time_that_is_not_a_date_becomes_the_kafka_records_and_is_kept(
    stamp: Any, original: str
) -> None:
    record = {"@timestamp": stamp, "event": {"id": "a"}, "kubernetes": {"namespace": "shop"}}
    doc = document(orjson.dumps(record), NAME, "2026-11-30T00:00:00Z", KAFKA_TIME)
    assert doc.index == "logferry-shop-2026.11.18"
    source = orjson.loads(doc.lines.split(b"\n")[1])
    assert source["@timestamp"] == "2026-11-18T11:06:40.123Z"
    assert source["tags"] == ["timestamp_invalid"]
    assert source["event"] == {
        "id": "a",
        "original_timestamp": original,
        "ingested": "2026-11-30T00:00:00Z",
    }


@pytest.mark.parametrize(
    ("event", "kept"),
    [("login", "login"), (5, "5"), (["a", 1], '["a",1]'), (True, "true")],
)
def test_an_event_that_is_no_object_is_kept_beside_the_ingested_time(event: Any, kept: str) -> None:
    """Not from the collector, whose records hold an `event` object: from another producer
    on the topic. Its value was dropped for `{"ingested": …}`."""
    record = {"@timestamp": "2026-11-30T10:00:00Z", "event": event, "message": "m"}
    doc = document(orjson.dumps(record), NAME, "2026-11-30T00:00:00Z", KAFKA_TIME)
    source = orjson.loads(doc.lines.split(b"\n")[1])
    assert source["event"] == {"original_event": kept, "ingested": "2026-11-30T00:00:00Z"}
    assert source["message"] == "m"


def test_a_record_without_time_gets_the_kafka_records_or_else_the_time_of_indexing() -> None:
    value = b'{"event":{"id":"a"},"tags":["multiline"],"kubernetes":{"namespace":"web"}}'
    lines = document(value, NAME, "2026-11-30T00:00:00Z", KAFKA_TIME).lines.split(b"\n")
    source = orjson.loads(lines[1])
    assert source["@timestamp"] == "2026-11-18T11:06:40.123Z"
    assert source["tags"] == ["multiline", "timestamp_invalid"]
    assert "original_timestamp" not in source["event"]
    # A Kafka record without a time (TIMESTAMP_NOT_AVAILABLE).
    doc = document(value, NAME, "2026-11-30T00:00:00Z", (0, -1))
    assert doc.index == "logferry-web-2026.11.30"
    assert orjson.loads(doc.lines.split(b"\n")[1])["@timestamp"] == "2026-11-30T00:00:00Z"


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-11-27T02:00:00Z",
        "2026-11-27T02:00:00.123456789Z",
        "2026-11-27T02:00:00.1+05:30",
        "1970-01-02T00:00:00-01:00",
        "2262-04-10T00:00:00Z",
        "2026-11-27T02:00:00+18:00",
        "2026-11-27T02:00:00-17:59",
    ],
)
def test_times_elasticsearch_takes_are_kept_as_they_are(stamp: str) -> None:
    assert valid_stamp(stamp)
    record = {"@timestamp": stamp, "event": {"id": "a"}}
    source = orjson.loads(
        document(orjson.dumps(record), NAME, "T", KAFKA_TIME).lines.split(b"\n")[1]
    )
    assert source == {**record, "event": {"id": "a", "ingested": "T"}}


@pytest.mark.parametrize(
    ("namespace", "name"),
    [
        ("-leading-dash", "unknown"),
        ("_x", "unknown"),
        ("..", "unknown"),
        ("n" * 300, "unknown"),
        ("Fine:Name", "fine_name"),
    ],
)
def test_fields_that_give_no_valid_index_name_fall_back_to_a_safe_one(
    namespace: str, name: str
) -> None:
    pattern = IndexName("{kubernetes.namespace}")
    assert pattern({"kubernetes": {"namespace": namespace}}) == name


def test_values_longer_than_an_index_name_are_not_remembered() -> None:
    """Such a value only ever gives the fallback; remembered, 10,000 poison records of
    60 KB values held 572 MB in the pipeline."""
    pattern = IndexName("logferry-{kubernetes.namespace}-{@timestamp:%Y.%m.%d}")
    names = len(NAMES)
    for n in range(20):
        record = {
            "@timestamp": "2026-11-27T02:00:00Z",
            "kubernetes": {"namespace": f"{n}" + "n" * 300},
        }
        assert pattern(record) == pattern.fallback
    assert len(pattern.known) == 0
    assert len(NAMES) == names


def test_a_pattern_whose_fallback_is_no_index_name_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="invalid names"):
        IndexName("-{kubernetes.namespace}")


RFC3339 = re.compile(
    r"(\d{4}-\d\d-\d\d)T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,9})?(Z|[+-]((0\d|1[0-7]):[0-5]\d|18:00))",
    re.ASCII,
)
"""RFC 3339 with Java's bound on zone offsets (18 hours), which date_nanos keeps to."""


@settings(max_examples=2000, deadline=None)
@given(
    st.sampled_from(["2026-11-27T02:00:05", "2026-02-30T00:00:00", "1969-12-31T23:59:59", "x"]),
    st.text(alphabet="0123456789.Z+-:z٣ ", max_size=12),
)
@example("2026-11-27T02:00:05", "")
@example("2026-11-27T02:00:05", ".Z")
@example("2026-11-27T02:00:05", ".٣Z")
@example("2026-11-27T02:00:05", ".٣+01:00")
@example("2026-11-27T02:00:05", ".1234567890Z")
@example("2026-11-27T02:00:05", "+19:00")
@example("2026-11-27T02:00:05", "+18:01")
def test_the_stamp_check_is_rfc_3339_within_date_nanos(second: str, rest: str) -> None:
    """valid_stamp reads the usual form without a regex: it must agree with one."""
    stamp = second + rest
    match = RFC3339.fullmatch(stamp)
    in_range = match is not None and "1970-01-02" <= match.group(1) <= "2262-04-10"
    try:
        real_day = match is not None and bool(date.fromisoformat(match.group(1)))
    except ValueError:
        real_day = False
    assert valid_stamp(stamp) == (in_range and real_day)


def ids_sent(record: dict[str, Any]) -> set[str]:
    """The `_id`s of a record's document on both roads: as the collector writes it (the
    cheaper road) and spaced out (read in full and written again); each road's document
    keeps the record's own `event.id`."""
    sent = set()
    for value in (orjson.dumps(record), json.dumps(record).encode()):
        (doc,) = documents([value], NAME, "T")
        action, source, _ = doc.lines.split(b"\n")
        assert orjson.loads(source)["event"]["id"] == record["event"]["id"]
        assert doc.id == orjson.loads(action)["create"]["_id"]
        sent.add(doc.id)
    return sent


@pytest.mark.parametrize("long_id", ["x" * 513, "é" * 257, "€" * 171 + "x" * 600])
def test_an_id_too_long_for_elasticsearch_is_replaced_by_one_stable_id(long_id: str) -> None:
    """Elasticsearch refuses a whole bulk for one `_id` over 512 bytes, so nothing of it
    would ever be indexed. The `_id` is then one made from the record's id: the same each
    time the record is read again, so that it is stored once."""
    record = {"@timestamp": "2026-11-27T02:00:00Z", "message": "m", "event": {"id": long_id}}
    (sent,) = ids_sent(record)
    assert len(sent.encode()) <= 512
    other = {**record, "event": {"id": long_id[:-1] + "y"}}
    assert ids_sent(other) != {sent}


@pytest.mark.parametrize("most", ["x" * 512, "é" * 256, "€" * 170 + "xx"])
def test_an_id_elasticsearch_takes_is_kept(most: str) -> None:
    record = {"@timestamp": "2026-11-27T02:00:00Z", "message": "m", "event": {"id": most}}
    assert ids_sent(record) == {most}


def test_a_batch_is_not_walked_by_the_garbage_collector() -> None:
    """A batch holds thousands of documents and entries until its bulk is answered: the
    collector walked each of them at every collection, about 4% of the work per record."""
    values = [orjson.dumps({"@timestamp": "2026-11-27T02:00:00Z", "event": {"id": "a"}})]
    values.append(b'{"event":{"id":"x"}}')
    docs = documents(values, NAME, "T")
    message = Message(topic="logs", partition=0, offset=0, value=values[0])
    entries = [Entry(message, ("logs", 0), doc) for doc in docs]
    assert not any(map(gc.is_tracked, [*docs, *entries]))


@pytest.mark.parametrize(
    "record",
    [
        {"@timestamp": "2026-11-27T02:00:00Z", "event": {"kind": "x"}, "message": "m"},
        {"@timestamp": "2026-11-27T02:00:00Z", "event": {"id": ""}, "message": "m"},
        {"@timestamp": "2026-11-27T02:00:00Z", "message": "m"},
        {"@timestamp": "not a time", "event": {"id": 7}},
    ],
)
def test_a_record_without_an_event_id_takes_its_place_in_kafka_as_id(
    record: dict[str, Any],
) -> None:
    """Else Elasticsearch made an id at every send: a bulk sent again after the node had
    indexed it doubled such documents."""
    place = kafka_id("logs", 3, 1234)
    assert place == "kafka:logs:3:1234"
    for value in (orjson.dumps(record), json.dumps(record, indent=1).encode()):
        doc = document(value, NAME, "T", KAFKA_TIME, place)
        action = orjson.loads(doc.lines.split(b"\n")[0])
        assert doc.id == action["create"]["_id"] == place
