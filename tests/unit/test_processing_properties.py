"""Arbitrary text through parsing, level detection and redaction: nothing raises, and what
comes out can always be encoded into a record."""

from __future__ import annotations

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from collector.levels import LEVELS, detect, normalise
from collector.redact import Redactor, rules, user_rule
from collector.structured import MODES, REASONS, Limits, parse

REDACTOR = Redactor(rules([user_rule(r"email=[\w.+-]+@[\w-]+\.\w+")]))
SMALL = Limits(max_chars=2000, max_depth=4, max_fields=20)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=30,
)
# Text built from the pieces that steer the code paths, besides any text at all.
pieces = st.sampled_from(
    [
        "{",
        "}",
        "[",
        "]",
        '"',
        "\\",
        "\\u0070",
        ":",
        "=",
        " ",
        "\t",
        "\n",
        "level=",
        "msg=",
        "ERROR",
        "[warn]",
        "E1130 10:00:00.123456 ",
        "2026-11-30 10:00:00,123 ",
        "<11>",
        "password=",
        '"password":',
        "Bearer ",
        "AKIA",
        "-----BEGIN PRIVATE KEY-----",
        "-----END PRIVATE KEY-----",
        "[REDACTED:x]",
        "ü",
        "日本",
        "🚀",
        "\x00",
        "\ud800",
    ]
)
texts = (
    st.text()
    | st.lists(pieces | st.text(max_size=8), max_size=30).map("".join)
    | json_values.map(lambda v: orjson.dumps(v).decode())
)


def check(text: str) -> None:
    # Records reach the processing mended (collector.decode): only then must they encode.
    encodable = "\ud800" not in text
    for mode in MODES:
        p = parse(text, mode, SMALL)
        assert p.level in (None, *LEVELS)
        assert p.reason in (None, *REASONS)
        if p.fields is None:
            assert p.message is None
            assert p.original is None
        else:
            assert p.reason is None
            assert mode in ("auto", "json", "logfmt")
            if encodable:
                orjson.dumps(p.fields)
        if p.message is not None:
            assert p.original == text
        if p.original is not None:
            assert p.message is not None
        message, original, hits = REDACTOR.apply(
            p.message if p.message is not None else text, p.original, p.fields
        )
        assert isinstance(message, str)
        assert (original is None) == (p.original is None)
        assert all(isinstance(h, str) for h in hits)
        if hits:
            assert "[REDACTED:" in message + (original or "") + repr(p.fields)
    assert detect(text) in (None, *LEVELS)
    assert normalise(text) in (None, *LEVELS)
    redacted, _ = REDACTOR.text(text)
    assert REDACTOR.text(redacted)[0] == redacted or "email" in REDACTOR.text(redacted)[1]


@settings(max_examples=400, deadline=None)
@given(texts)
@example('{"a":' * 50 + "1" + "}" * 50)
@example("[" * 3000)
@example('{"password":"\\u0000"}')
@example("level=")
@example("<")
@example("E1130 10:0")
def test_nothing_raises_on_any_text(text: str) -> None:
    check(text)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_normalise_takes_any_parsed_value(value: object) -> None:
    assert normalise(value) in (None, *LEVELS)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=12), json_values, max_size=6))
def test_redacting_fields_keeps_their_shape(fields: dict[str, object]) -> None:
    before = orjson.loads(orjson.dumps(fields))
    REDACTOR.fields(fields)
    assert fields.keys() == before.keys()
    orjson.dumps(fields)
