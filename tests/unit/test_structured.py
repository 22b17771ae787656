from __future__ import annotations

import orjson
import pytest

from collector.structured import (
    INVALID_JSON,
    INVALID_LOGFMT,
    NOT_OBJECT,
    TOO_DEEP,
    TOO_LARGE,
    TOO_MANY_FIELDS,
    Limits,
    Parsed,
    mode,
    parse,
)

APP = (
    '{"ts":"2026-11-30T10:00:00Z","level":"error","logger":"shop","msg":"payment failed",'
    '"order":{"id":7,"items":[1,2]}}'
)


def nested(depth: int) -> str:
    """An object nested `depth` levels deep: depth 1 is {"a": 0}."""
    return '{"a":' * depth + "0" + "}" * depth


@pytest.mark.parametrize(
    ("text", "mode", "expected"),
    [
        # a JSON application log: fields, message from msg, original kept
        (
            APP,
            "auto",
            Parsed(
                {
                    "ts": "2026-11-30T10:00:00Z",
                    "level": "error",
                    "logger": "shop",
                    "order": {"id": 7, "items": [1, 2]},
                },
                "payment failed",
                APP,
                "error",
                None,
            ),
        ),
        # `message` wins over `msg`; the other stays a field
        (
            '{"message":"a","msg":"b"}',
            "auto",
            Parsed({"msg": "b"}, "a", '{"message":"a","msg":"b"}', None, None),
        ),
        # a message that is not a string stays a field, the text stays the message
        ('{"msg":{"x":1}}', "auto", Parsed({"msg": {"x": 1}}, None, None, None, None)),
        (
            '{"msg":null,"lvl":"W"}',
            "auto",
            Parsed({"msg": None, "lvl": "W"}, None, None, "warn", None),
        ),
        # no message key: fields only, no event.original (the message is the text)
        ('{"a":1}', "auto", Parsed({"a": 1}, None, None, None, None)),
        ("{}", "auto", Parsed({}, None, None, None, None)),
        # leading and trailing space around an object
        ('  {"a":1}\r', "auto", Parsed({"a": 1}, None, None, None, None)),
        # level keys, spellings and numbers
        (
            '{"severity":"WARNING"}',
            "auto",
            Parsed({"severity": "WARNING"}, None, None, "warn", None),
        ),
        ('{"level":30}', "auto", Parsed({"level": 30}, None, None, "info", None)),
        ('{"Level":"Err"}', "auto", Parsed({"Level": "Err"}, None, None, "error", None)),
        (
            '{"log.level":"debug"}',
            "auto",
            Parsed({"log.level": "debug"}, None, None, "debug", None),
        ),
        (
            '{"log":{"level":"fatal"}}',
            "auto",
            Parsed({"log": {"level": "fatal"}}, None, None, "fatal", None),
        ),
        ('{"loglevel":"loud"}', "auto", Parsed({"loglevel": "loud"}, None, None, None, None)),
        ('{"level":true}', "auto", Parsed({"level": True}, None, None, None, None)),
        # keys named like record fields stay under json.*; the record's own are untouched
        (
            '{"@timestamp":"x","message":"m","kubernetes":{"pod":1},"tags":["a"]}',
            "auto",
            Parsed(
                {"@timestamp": "x", "kubernetes": {"pod": 1}, "tags": ["a"]},
                "m",
                '{"@timestamp":"x","message":"m","kubernetes":{"pod":1},"tags":["a"]}',
                None,
                None,
            ),
        ),
        # duplicate keys: the last value, as other parsers do
        ('{"a":1,"a":"two"}', "auto", Parsed({"a": "two"}, None, None, None, None)),
        # an integer past 64 bits becomes a float, so the record can be encoded again
        (
            '{"n":123456789012345678901234567890}',
            "auto",
            Parsed({"n": 1.2345678901234568e29}, None, None, None, None),
        ),
        # text that stays text, silently in auto mode
        ("[1,2,3]", "auto", Parsed(None, None, None, None, None)),
        ('"a JSON string"', "auto", Parsed(None, None, None, None, None)),
        ("42", "auto", Parsed(None, None, None, None, None)),
        ("user {id=7} logged in", "auto", Parsed(None, None, None, None, None)),
        ("ERROR {id=7} failed", "auto", Parsed(None, None, None, "error", None)),
        ("", "auto", Parsed(None, None, None, None, None)),
        # text that starts like an object but is not one: a reason
        ("{id=7, name=x}", "auto", Parsed(None, None, None, None, INVALID_JSON)),
        ('{"a":1} trailing', "auto", Parsed(None, None, None, None, INVALID_JSON)),
        ('{"a":1}{"b":2}', "auto", Parsed(None, None, None, None, INVALID_JSON)),
        ('{"a":NaN}', "auto", Parsed(None, None, None, None, INVALID_JSON)),
        ('{"a":1e999}', "auto", Parsed(None, None, None, None, INVALID_JSON)),
        ('{"a":"\\ud800"}', "auto", Parsed(None, None, None, None, INVALID_JSON)),
        ('{"a":1', "auto", Parsed(None, None, None, None, INVALID_JSON)),
        ("{", "auto", Parsed(None, None, None, None, INVALID_JSON)),
        # json mode: every line is tried
        ("[1,2,3]", "json", Parsed(None, None, None, None, NOT_OBJECT)),
        ('"a JSON string"', "json", Parsed(None, None, None, None, NOT_OBJECT)),
        ("null", "json", Parsed(None, None, None, None, NOT_OBJECT)),
        ("ERROR plain", "json", Parsed(None, None, None, "error", INVALID_JSON)),
        ('{"a":1}', "json", Parsed({"a": 1}, None, None, None, None)),
        # none: no parsing, the level still read from the text
        ('{"level":"error"}', "none", Parsed(None, None, None, None, None)),
        ("WARN x", "none", Parsed(None, None, None, "warn", None)),
        # logfmt
        (
            'time=2026-11-30T10:00:00Z level=warn msg="disk \\"sda\\" at 91%" pct=91',
            "logfmt",
            Parsed(
                {"time": "2026-11-30T10:00:00Z", "level": "warn", "pct": "91"},
                'disk "sda" at 91%',
                'time=2026-11-30T10:00:00Z level=warn msg="disk \\"sda\\" at 91%" pct=91',
                "warn",
                None,
            ),
        ),
        ("a=1 b= c=x.y", "logfmt", Parsed({"a": "1", "b": "", "c": "x.y"}, None, None, None, None)),
        (
            "log.level=info k8s/ns=x",
            "logfmt",
            Parsed({"log.level": "info", "k8s/ns": "x"}, None, None, "info", None),
        ),
        ("a=1 a=2", "logfmt", Parsed({"a": "2"}, None, None, None, None)),
        # not logfmt: prose, bare words, keys that are not names, broken quotes
        ("hello world", "logfmt", Parsed(None, None, None, None, INVALID_LOGFMT)),
        ("ERROR disk full=yes", "logfmt", Parsed(None, None, None, "error", INVALID_LOGFMT)),
        ("a=1 flag", "logfmt", Parsed(None, None, None, None, INVALID_LOGFMT)),
        ('"quoted key"=1', "logfmt", Parsed(None, None, None, None, INVALID_LOGFMT)),
        ("=1", "logfmt", Parsed(None, None, None, None, INVALID_LOGFMT)),
        ("1=one", "logfmt", Parsed(None, None, None, None, INVALID_LOGFMT)),
        ('a="unclosed', "logfmt", Parsed(None, None, None, None, INVALID_LOGFMT)),
        ("a=b=c", "logfmt", Parsed(None, None, None, None, INVALID_LOGFMT)),
        ("", "logfmt", Parsed(None, None, None, None, INVALID_LOGFMT)),
        ('{"a":1}', "logfmt", Parsed(None, None, None, None, INVALID_LOGFMT)),
    ],
)
def test_parse(text: str, mode: str, expected: Parsed) -> None:
    assert parse(text, mode) == expected


def test_huge_object_stays_text_with_a_reason() -> None:
    limits = Limits(max_chars=1000)
    big = orjson.dumps({"msg": "x" * 2000, "level": "error"}).decode()
    got = parse(big, "auto", limits)
    assert got.fields is None
    assert got.message is None
    assert got.reason == TOO_LARGE
    fits = orjson.dumps({"msg": "x" * 900}).decode()
    assert parse(fits, "auto", limits).message == "x" * 900


def test_default_size_bound_is_64_kib_of_characters() -> None:
    at = '{"a":"' + "é" * (64 * 1024 - 8) + '"}'
    assert len(at) == 64 * 1024
    assert parse(at).fields is not None
    assert parse(at[:-2] + 'x"}').reason == TOO_LARGE


@pytest.mark.parametrize("mode", ["auto", "json"])
def test_depth_at_the_bound_parses_and_past_it_stays_text(mode: str) -> None:
    limits = Limits(max_depth=5)
    assert parse(nested(5), mode, limits).fields is not None
    assert parse(nested(6), mode, limits).reason == TOO_DEEP
    arrays = '{"a":' + "[" * 5 + "]" * 5 + "}"
    assert parse(arrays, mode, limits).reason == TOO_DEEP
    # brackets inside strings are not nesting
    assert parse('{"a":"{{{{{{[[[[[["}', mode, limits).fields == {"a": "{{{{{{[[[[[["}


def test_nesting_past_what_the_json_parser_takes_stays_text() -> None:
    deep = nested(5000)
    assert parse(deep, "auto", Limits(max_chars=10**6)).reason in (INVALID_JSON, TOO_DEEP)


def test_default_depth_keeps_clear_of_elasticsearch_depth_limit() -> None:
    # `json` itself is one level; Elasticsearch refuses more than 20.
    assert parse(nested(10)).fields is not None
    assert parse(nested(11)).reason == TOO_DEEP


def test_too_many_keys_over_all_objects() -> None:
    limits = Limits(max_fields=10)
    flat = orjson.dumps({f"k{i}": i for i in range(10)}).decode()
    assert parse(flat, "auto", limits).fields is not None
    spread = orjson.dumps({f"k{i}": {"a": 1} for i in range(6)}).decode()
    assert parse(spread, "auto", limits).reason == TOO_MANY_FIELDS
    many = " ".join(f"k{i}=v" for i in range(11))
    assert parse(many, "logfmt", limits).reason == TOO_MANY_FIELDS
    # colons in values are not keys
    colons = orjson.dumps({"url": "a:b:c:d:e:f:g:h:i:j:k:l"}).decode()
    assert parse(colons, "auto", limits).fields == {"url": "a:b:c:d:e:f:g:h:i:j:k:l"}


@pytest.mark.parametrize(
    "limits",
    [{"max_chars": 0}, {"max_depth": 0}, {"max_fields": -1}, {"max_depth": 21}],
)
def test_limits_refuse_bounds_that_cannot_work(limits: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="max_"):
        Limits(**limits)


def test_mixed_types_for_one_key_across_apps_are_kept_as_they_are() -> None:
    values = ['{"status":200}', '{"status":"ok"}', '{"status":{"code":1}}', '{"status":[1,"a"]}']
    assert [parse(v).fields for v in values] == [orjson.loads(v) for v in values]


def test_parsed_fields_encode_again() -> None:
    text = '{"msg":"ü 日本 🚀","n":18446744073709551615,"f":1.5e300,"z":null,"esc":"\\u003c\\n"}'
    got = parse(text)
    assert orjson.loads(orjson.dumps(got.fields)) == got.fields
    assert got.message == "ü 日本 🚀"


@pytest.mark.parametrize(
    "text",
    ["a=b " * 250_000 + '"', 'a="' + "x\\" * 500_000, "a" * 1_000_000, "a=" * 500_000],
)
def test_a_megabyte_that_is_nearly_logfmt_is_refused_in_linear_time(text: str) -> None:
    got = parse(text, "logfmt", Limits(max_chars=2_000_000, max_fields=1_000_000))
    assert got.fields is None
    assert got.reason == INVALID_LOGFMT


@pytest.mark.parametrize(
    ("text", "expected"),
    [("auto", "auto"), (" JSON ", "json"), ("logfmt", "logfmt"), ("none", "none")],
)
def test_mode_from_a_setting_or_an_annotation(text: str, expected: str) -> None:
    assert mode(text) == expected


@pytest.mark.parametrize("text", ["", "yaml", "json,logfmt"])
def test_unknown_mode_names_the_choices(text: str) -> None:
    with pytest.raises(ValueError, match="must be one of auto, json, logfmt, none"):
        mode(text)
