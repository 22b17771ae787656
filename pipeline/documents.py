"""Kafka records -> bulk lines: the target index, `_id` = `event.id`, `event.ingested` added."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

PLACEHOLDER = re.compile(r"\{([^{}:]+)(?::([^{}]*))?\}")
UNSAFE = re.compile(r"[^a-z0-9_.+-]+")


class IndexName:
    """`logferry-{kubernetes.namespace}-{@timestamp:%Y.%m.%d}` compiled once into getters."""

    def __init__(self, pattern: str) -> None:
        literal = PLACEHOLDER.sub("", pattern)
        if "{" in literal or "}" in literal:
            raise ValueError(f"unbalanced braces in index pattern {pattern!r}")
        if literal != literal.lower():
            raise ValueError(f"index names are lower case: {pattern!r}")
        getters: list[Getter] = []
        literals: list[str] = []
        self.known: dict[str, bytes] = {}
        end = 0
        for match in PLACEHOLDER.finditer(pattern):
            literals.append(pattern[end : match.start()])
            field, form = match.group(1), match.group(2)
            if form is not None and field != "@timestamp":
                raise ValueError(f"only {{@timestamp:FORMAT}} takes a format, not {field}")
            getters.append(day_getter(form) if form is not None else field_getter(field))
            end = match.end()
        literals.append(pattern[end:])
        self.of = filled("%s".join(part.replace("%", "%%") for part in literals), getters)
        """The index of a document: called once per record."""

    def __call__(self, doc: dict[str, Any]) -> str:
        return self.of(doc)

    def quoted(self, index: str) -> bytes:
        """The name as a JSON string, remembered: a run writes to few indices."""
        text = self.known.get(index)
        if text is None:
            text = orjson.dumps(index)
            if len(self.known) < 10_000:
                self.known[index] = text
        return text


Getter = Callable[[dict[str, Any]], str]


def filled(form: str, getters: list[Getter]) -> Getter:
    """`form % (values of the getters)`; the usual patterns, with one or two fields, get a
    function of their own, which costs half of a loop over the getters."""
    if len(getters) == 1:
        (only,) = getters
        return lambda doc: form % only(doc)
    if len(getters) == 2:
        first, second = getters
        return lambda doc: form % (first(doc), second(doc))
    return lambda doc: form % tuple([get(doc) for get in getters])


def field_getter(field: str) -> Getter:
    path = field.split(".")
    names: dict[str, str] = {}

    def get(doc: dict[str, Any]) -> str:
        value: Any = doc
        try:
            for key in path:
                value = value[key]
        except (KeyError, TypeError, IndexError):
            return "unknown"
        if not value:
            return "unknown"
        text = str(value)
        name = names.get(text)
        if name is None:
            # Index names allow few characters; a field value is made safe once and remembered.
            name = UNSAFE.sub("_", text.lower())
            if len(names) < 10_000:
                names[text] = name
        return name

    return get


def day_getter(form: str) -> Getter:
    """The date of an RFC 3339 stamp in `form` (%Y %m %d), read off the text, not parsed."""
    days: dict[str, str] = {}

    def get(doc: dict[str, Any]) -> str:
        stamp = doc.get("@timestamp")
        if type(stamp) is not str or len(stamp) < 10:
            return "unknown"
        date = stamp[:10]
        text = days.get(date)
        if text is None:
            text = form.replace("%Y", date[0:4]).replace("%m", date[5:7]).replace("%d", date[8:10])
            if len(days) < 10_000:
                days[date] = text
        return text

    return get


class Document(NamedTuple):
    index: str
    id: str | None
    lines: bytes
    """The `create` action and the document, each with its newline: the bulk body's part."""


new_document = functools.partial(tuple.__new__, Document)
"""Document((index, id, lines)) without the NamedTuple's Python-level __new__ (per record)."""

EVENT_KEY = b'"event":{'
ACTION = b'{"create":{"_index":%s,"_id":%s}}\n'
ACTION_WITHOUT_ID = b'{"create":{"_index":%s}}\n'


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
    index = index_name.of(doc)
    doc_id = event.get("id")
    if type(doc_id) is str and doc_id:
        action = ACTION % (index_name.quoted(index), orjson.dumps(doc_id))
    else:
        doc_id = None
        action = ACTION_WITHOUT_ID % index_name.quoted(index)
    # The collector writes compact JSON with one top-level `"event":{"id":…`: there the
    # field is spliced in, which is much cheaper than encoding the document again.
    at = value.find(EVENT_KEY)
    if event and "ingested" not in event and at >= 0 and value.rfind(EVENT_KEY) == at:
        at += len(EVENT_KEY)
        splice = b'"ingested":"%s",' % ingested.encode()
        return new_document(
            (index, doc_id, b"".join((action, value[:at], splice, value[at:], b"\n")))
        )
    event["ingested"] = ingested
    return new_document(
        (index, doc_id, action + orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE))
    )


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
