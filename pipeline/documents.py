"""Kafka records -> bulk lines: the target index, `_id` = `event.id`, `event.ingested` added.

An `event.id` longer than Elasticsearch takes as an `_id` gives a digest of it instead: one
such id in a bulk would have the whole bulk refused, at every retry. A record without one
(another producer's) takes its place in Kafka (`kafka:<topic>:<partition>:<offset>`).

A record whose `@timestamp` is missing or not a date Elasticsearch takes is indexed at the
Kafka record's time instead, tagged `timestamp_invalid`, its own value kept in
`event.original_timestamp`: rather than refused, or named into an index from a stray text.
"""

from __future__ import annotations

import functools
import hashlib
import operator
import re
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any

import msgspec
import orjson
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE

PLACEHOLDER = re.compile(r"\{([^{}:]+)(?::([^{}]*))?\}")
UNSAFE = re.compile(r"[^a-z0-9_.+-]+")
NOT_IN_INDEX_NAMES = re.compile(r'[\\/*?"<>| ,#:A-Z]')
SECOND = re.compile(r"(\d{4}-\d\d-\d\d)T([01]\d|2[0-3]):[0-5]\d:[0-5]\d", re.ASCII)
FRACTION_AND_ZONE = re.compile(
    r"(?:\.\d{1,9})?(?:Z|[+-](?:(?:0\d|1[0-7]):[0-5]\d|18:00))", re.ASCII
)
"""RFC 3339 as Elasticsearch's date_nanos reads it: the second, then what follows it
(ASCII digits only: `\\d` alone takes any script's), a zone offset of at most 18 hours
(Java's bound: `+19:00` is refused, the document dead-lettered)."""
DAY = re.compile(r"\d{4}-\d\d-\d\d", re.ASCII)
FIRST_DAY = date(1970, 1, 2)
LAST_DAY = date(2262, 4, 10)
"""date_nanos holds 1970 to 2262; a day inside, whatever the zone offset."""
TIMESTAMP_INVALID = "timestamp_invalid"

REMEMBERED_CHARS = 255
"""The longest value remembered with its index name: an index name is at most 255 bytes, so
a longer value only ever gives the fallback, and 10,000 of 60 KB (poison records) held
572 MB."""


def valid_day(text: str) -> bool:
    """`YYYY-MM-DD`, a real day that date_nanos holds (fromisoformat alone also takes
    `2026-W48-1` and `20261127`)."""
    if DAY.fullmatch(text) is None:
        return False
    try:
        return FIRST_DAY <= date.fromisoformat(text) <= LAST_DAY
    except ValueError:
        return False


SECONDS: dict[str, bool] = {}
"""`YYYY-MM-DDTHH:MM:SS` -> whether it is a valid second: asked once per second seen, not
per record (a record's full stamp is new every time; its second is not)."""


def learn_second(second: str) -> bool:
    match = SECOND.fullmatch(second)
    valid = match is not None and valid_day(match.group(1))
    if len(SECONDS) >= 10_000:
        SECONDS.clear()
    SECONDS[second] = valid
    return valid


def valid_second(second: str) -> bool:
    return SECONDS.get(second) or learn_second(second)


def valid_stamp(stamp: Any) -> bool:
    """Whether `stamp` is a time Elasticsearch indexes: its second, then what follows it."""
    return (
        type(stamp) is str
        and valid_second(stamp[:19])
        and FRACTION_AND_ZONE.fullmatch(stamp, 19) is not None
    )


A_SECOND = "1970-01-02T00:00:00"
"""A valid second, the one documents() knows before it has read a record."""


def valid_index(name: str) -> bool:
    """Elasticsearch's rules for an index name."""
    return (
        0 < len(name.encode()) <= 255
        and name not in (".", "..")
        and not name.startswith(("-", "_", "+"))
        and NOT_IN_INDEX_NAMES.search(name) is None
    )


class Event(msgspec.Struct, gc=False):
    """What a document needs of a record's `event`: `ingested` is UNSET when absent."""

    id: Any = None
    ingested: Any = msgspec.UNSET


TEXT: Any = object()
"""A field of the index pattern in the tree of fields to read: text or null."""

Key = tuple[Any, Any]
"""(the values of the pattern's fields as they are: one value, a tuple of two or more, or
None without fields; the first ten characters of `@timestamp`, or None where the pattern
holds no date)."""


class IndexName:
    """`logferry-{kubernetes.namespace}-{@timestamp:%Y.%m.%d}` compiled once.

    Per record, only the fields' raw values are read (the Key): the name they give, and its
    JSON form for the bulk action, are remembered under those values (a run writes to few
    indices), so the values are made safe once per new value.
    """

    def __init__(self, pattern: str) -> None:
        literal = PLACEHOLDER.sub("", pattern)
        if "{" in literal or "}" in literal:
            raise ValueError(f"unbalanced braces in index pattern {pattern!r}")
        if literal != literal.lower():
            raise ValueError(f"index names are lower case: {pattern!r}")
        self.forms: list[str | None] = []
        """Per placeholder: the date's format, or None for a field."""
        paths: list[list[str]] = []
        literals: list[str] = []
        end = 0
        for match in PLACEHOLDER.finditer(pattern):
            literals.append(pattern[end : match.start()])
            field, form = match.group(1), match.group(2)
            if form is not None and field != "@timestamp":
                raise ValueError(f"only {{@timestamp:FORMAT}} takes a format, not {field}")
            self.forms.append(form)
            if form is None:
                paths.append(field.split("."))
            end = match.end()
        literals.append(pattern[end:])
        self.fallback = "unknown".join(literals)
        """The name when the fields give no valid one: the pattern, every field unknown."""
        if not valid_index(self.fallback):
            raise ValueError(f"index pattern {pattern!r} gives invalid names: {self.fallback!r}")
        self.form = "%s".join(part.replace("%", "%%") for part in literals)
        self.fields = len(paths)
        self.dated = any(form is not None for form in self.forms)
        self.raws = [raw_getter(path) for path in paths]
        self.known: dict[Key, tuple[str, bytes]] = {}
        road = fields_road(paths)
        self.decode_fields: Callable[[bytes], Any] | None = road and road[0]
        """A record's JSON -> a Struct of only the fields a document needs: `@timestamp`,
        `event`'s `id` and `ingested`, and the pattern's fields; None where the pattern
        names fields the document reads otherwise (`{event.id}`) or one inside another:
        every record is then read in full."""
        self.fields_key: Callable[[Any], Any] = road[1] if road else nothing
        """That Struct -> the first part of the Key."""

    def __call__(self, doc: dict[str, Any]) -> str:
        return self.named(doc)[0]

    def named(self, doc: dict[str, Any]) -> tuple[str, bytes]:
        """The index of a record read in full, and its name as a JSON string."""
        values = [raw(doc) for raw in self.raws]
        stamp = doc.get("@timestamp") if self.dated else None
        key = (
            values[0] if self.fields == 1 else tuple(values) if values else None,
            stamp[:10] if type(stamp) is str else None,
        )
        try:
            return self.known[key]
        except (KeyError, TypeError):
            return self.make(key)

    def make(self, key: Key) -> tuple[str, bytes]:
        """The name of a Key not remembered: once per new combination of values."""
        values, day = key
        fields = iter((values,) if self.fields == 1 else values or ())
        index = self.form % tuple(
            [
                field_text(next(fields)) if form is None else day_text(day, form)
                for form in self.forms
            ]
        )
        if not valid_index(index):
            index = self.fallback
        named = (index, orjson.dumps(index))
        # Only text and absent values are remembered: 1, 1.0 and True are one dict key, and
        # not one name; objects and lists are not keys at all.
        texts = (values,) if self.fields == 1 else values or ()
        if len(self.known) < 10_000 and all(
            v is None or (type(v) is str and len(v) <= REMEMBERED_CHARS) for v in (*texts, day)
        ):
            self.known[key] = named
        return named


def nothing(_: Any) -> None:
    return None


def fields_road(
    paths: list[list[str]],
) -> tuple[Callable[[bytes], Any], Callable[[Any], Any]] | None:
    """A decoder of just the fields a document needs, into Structs (msgspec checks the
    rest of the JSON as it skips it, but builds no object for it), and a getter of the
    pattern's fields from what it gives. None where a path of the pattern ends at or
    inside another field read (`{event}`, `{event.id}`, `{kubernetes}` beside
    `{kubernetes.namespace}`)."""
    tree: dict[str, Any] = {"@timestamp": TEXT, "event": Event}
    for path in paths:
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
            if type(node) is not dict:
                return None
        if node.setdefault(path[-1], TEXT) is not TEXT:
            return None
    top, attrs = struct_of(tree, {"@timestamp": "stamp", "event": "event"})
    getter = operator.attrgetter(*[attrs(path) for path in paths]) if paths else nothing
    return msgspec.json.Decoder(top).decode, getter


def struct_of(
    tree: dict[str, Any], names: dict[str, str] | None = None
) -> tuple[type, Callable[[list[str]], str]]:
    """The Struct of a tree of fields, and the attribute path of a field's path in it.
    Attributes are named `a0`, `a1`… (JSON keys need not be identifiers), and `stamp` and
    `event` at the top."""
    fields: list[tuple[str, Any, Any]] = []
    rename: dict[str, str] = {}
    inner: dict[str, Callable[[list[str]], str]] = {}
    for n, (key, leaf) in enumerate(tree.items()):
        attr = (names or {}).get(key, f"a{n}")
        rename[attr] = key
        if leaf is TEXT:
            fields.append((attr, str | None, None))
        elif leaf is Event:
            # Absent or null, the record takes the other road.
            fields.append((attr, Event | None, None))
        else:
            kind, inner[key] = struct_of(leaf)
            # An empty one where the record has none: the pattern's getters need no checks.
            fields.append((attr, kind, msgspec.field(default_factory=kind)))

    def attrs(path: list[str]) -> str:
        first = next(a for a, k in rename.items() if k == path[0])
        return first if len(path) == 1 else f"{first}.{inner[path[0]](path[1:])}"

    struct = msgspec.defstruct("Fields", fields, rename=rename, gc=False)
    return struct, attrs


def raw_getter(path: list[str]) -> Callable[[dict[str, Any]], Any]:
    """The value at a field's path as it is, None where the path ends early.

    Without exceptions: records that lack the field are common (no namespace), and raising
    costs more than the whole lookup.
    """

    def walk(doc: dict[str, Any]) -> Any:
        value: Any = doc
        for key in path:
            if type(value) is not dict:
                return None
            value = value.get(key)
        return value

    return walk


NAMES: dict[str, str] = {}


def field_text(value: Any) -> str:
    """A field's value as a part of an index name: index names allow few characters; a
    value is made safe once and remembered."""
    if not value:
        return "unknown"
    text = str(value)
    name = NAMES.get(text)
    if name is None:
        name = UNSAFE.sub("_", text.lower())
        if len(NAMES) < 10_000 and len(text) <= REMEMBERED_CHARS:
            NAMES[text] = name
    return name


def day_text(day: Any, form: str) -> str:
    """The date of a stamp's first ten characters in `form` (%Y %m %d), read off the text,
    not parsed."""
    if type(day) is not str or not valid_day(day):
        return "unknown"
    return form.replace("%Y", day[0:4]).replace("%m", day[5:7]).replace("%d", day[8:10])


class Document(msgspec.Struct, gc=False):
    """Not tracked by the garbage collector: it holds only text and bytes."""

    index: str
    id: str | None
    """The `_id`: the record's `event.id`, or its digest where that is too long."""
    lines: bytes
    """The `create` action and the document, each with its newline: the bulk body's part."""


EVENT = b'"event"'
OBJECT = b':{"'
NEWLINE = ord("\n")
CREATE = b'{"create":{"_index":'
ID = b',"_id":'
END = b"}}\n"
UNSET = msgspec.UNSET


ID_BYTES = 512
"""Elasticsearch's longest `_id`, in UTF-8 bytes: one longer, and it refuses the whole bulk
(action_request_validation_exception), again at every retry."""
ID_CHARS = ID_BYTES // 4
"""The longest id sure to be within ID_BYTES without encoding it: a character takes at most
four bytes."""


def fitting_id(doc_id: str) -> str:
    """The `_id` of a record whose id is longer than Elasticsearch takes: a digest of it,
    the same every time the record is read again, so that it is still stored once. The
    document keeps its own `event.id`."""
    raw = doc_id.encode()
    if len(raw) <= ID_BYTES:
        return doc_id
    return hashlib.blake2b(raw, digest_size=32).hexdigest()


class Undecodable(ValueError):
    """A Kafka record that is not a JSON object: it goes to the dead-letter topic."""


def no_time(_: int) -> None:
    return None


def no_id(_: int) -> None:
    return None


def kafka_id(topic: str, partition: int, offset: int) -> str:
    """The `_id` of a record without an `event.id` (not from the collector): its place in
    Kafka, the same each time it is read again. Without one, Elasticsearch made a new id at
    every send, and a bulk retried after the node had indexed it doubled its documents."""
    return fitting_id(f"kafka:{topic}:{partition}:{offset}")


def document(
    value: bytes | None,
    index_name: IndexName,
    ingested: str,
    kafka_time: tuple[int, int] | None = None,
    place: str | None = None,
) -> Document:
    """A Kafka record's value (None for a record without one) -> its bulk lines.

    `kafka_time` is the record's (timestamp type, milliseconds), as Message.timestamp()
    gives it: the document's time when its own `@timestamp` is not one. `place` (kafka_id)
    is its `_id` when it has no `event.id`.
    """
    return documents((value,), index_name, ingested, lambda _: kafka_time, lambda _: place)[0]


def documents(
    values: Sequence[bytes | None],
    index_name: IndexName,
    ingested: str,
    kafka_time: Callable[[int], tuple[int, int] | None] = no_time,
    place: Callable[[int], str | None] = no_id,
) -> list[Document]:
    """Kafka records' values -> their bulk lines, in order; `kafka_time(n)` and `place(n)`
    are the n-th record's time and kafka_id, as for document(). Raises Undecodable at the
    first record that is no JSON object.

    The collector writes compact JSON with one `"event":{…`: there `ingested` is spliced
    in, which is much cheaper than encoding the whole record again, once the record is
    read for just the fields a document needs and found valid. Per batch, not per record:
    the loop's locals, and the second of the last stamp found valid (a record's stamp is
    new every time, its second mostly not), are what make it cheap.
    """
    decode = index_name.decode_fields
    key_of = index_name.fields_key
    known = index_name.known
    spliced = ingested_field(ingested)
    second = A_SECOND
    day = second[:10] if index_name.dated else None
    out: list[Document] = []
    append = out.append
    for position, value in enumerate(values):
        fields = None
        # A record that is not valid UTF-8 (msgspec does not check the UTF-8 of what it
        # skips) or holds a line break (the bulk body is split at line breaks) is read in
        # full; `NEWLINE in value` is memchr, `b"\n" in value` a slower general search.
        if (
            decode is not None
            and type(value) is bytes
            and NEWLINE not in value
            and (value.isascii() or utf8(value))
        ):
            try:
                fields = decode(value)
            except (msgspec.MsgspecError, RecursionError):
                # RecursionError: msgspec nests no deeper than the stack; orjson goes to 1024.
                fields = None
        if (
            fields is not None
            and (event := fields.event) is not None
            and event.ingested is UNSET
            and (stamp := fields.stamp) is not None
        ):
            usual = stamp.startswith(second)
            if not usual and valid_second(stamp[:19]):
                second, usual = stamp[:19], True
                day = second[:10] if index_name.dated else None
            # The only `"event"` in the record, and an object with a member: the record's
            # own event (the top level has one, and no other is spelled so).
            if (
                usual
                and FRACTION_AND_ZONE.fullmatch(stamp, 19) is not None
                and value.count(EVENT) == 1
                and value.startswith(OBJECT, at := value.find(EVENT) + 7)
            ):
                at += 2
                key = (key_of(fields), day)
                index, quoted = known.get(key) or index_name.make(key)
                doc_id = event.id
                # One join of the parts, without formatting the action first.
                if type(doc_id) is not str or not doc_id:
                    doc_id = place(position)
                elif len(doc_id) > ID_CHARS:
                    doc_id = fitting_id(doc_id)
                if doc_id is not None:
                    parts = (CREATE, quoted, ID, orjson.dumps(doc_id), END, value[:at])
                    lines = b"".join((*parts, spliced, value[at:], b"\n"))
                else:
                    lines = b"".join((CREATE, quoted, END, value[:at], spliced, value[at:], b"\n"))
                append(Document(index, doc_id, lines))
                continue
        append(rebuilt(value, index_name, ingested, kafka_time(position), place(position)))
    return out


def rebuilt(
    value: bytes | None,
    index_name: IndexName,
    ingested: str,
    kafka_time: tuple[int, int] | None,
    place: str | None = None,
) -> Document:
    """The document of a record read in full and written again."""
    doc = parsed(value)
    event = doc.get("event")
    stray = None
    if type(event) is not dict:
        stray, event = event, None
    stamp = doc.get("@timestamp", MISSING)
    if not valid_stamp(stamp):
        doc["@timestamp"] = stamp_of(kafka_time, ingested)
        tag(doc, TIMESTAMP_INVALID)
        if stamp is not MISSING:
            event = doc["event"] = event or kept_event(stray)
            event["original_timestamp"] = as_text(stamp)
    # Named from the record as it came, but for a time that was none, as above:
    # `{event}` is in the name before `ingested` is in the event.
    index, quoted = index_name.named(doc)
    if event is None:
        event = doc["event"] = kept_event(stray)
    event["ingested"] = ingested
    try:
        source = orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError as exc:
        # orjson reads 1024 levels deep but writes 255.
        raise Undecodable(f"cannot be written again: {exc}") from exc
    doc_id = event.get("id")
    if type(doc_id) is not str or not doc_id:
        doc_id = place
        if doc_id is None:
            return Document(index, None, b"".join((CREATE, quoted, END, source)))
    elif len(doc_id) > ID_CHARS:
        doc_id = fitting_id(doc_id)
    action = (CREATE, quoted, ID, orjson.dumps(doc_id), END)
    return Document(index, doc_id, b"".join((*action, source)))


MISSING: Any = object()


def stamp_of(kafka_time: tuple[int, int] | None, ingested: str) -> str:
    """The Kafka record's time in RFC 3339, or the time of indexing when it has none."""
    if kafka_time is None or kafka_time[0] == TIMESTAMP_NOT_AVAILABLE or kafka_time[1] < 0:
        return ingested
    seconds, millis = divmod(kafka_time[1], 1000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis:03d}Z"


def tag(doc: dict[str, Any], name: str) -> None:
    tags = doc.get("tags")
    if type(tags) is list:
        tags.append(name)
    elif type(tags) is str:
        doc["tags"] = [tags, name]
    elif tags is None:
        doc["tags"] = [name]


def kept_event(stray: Any) -> dict[str, Any]:
    """The `event` object of a record whose own was none: another producer's `event` that
    is no object is kept in it as text, as a stray `@timestamp` is."""
    return {} if stray is None else {"original_event": as_text(stray)}


def as_text(value: Any) -> str:
    """A value kept where only text fits: a text as it is, anything else as JSON."""
    return value if type(value) is str else orjson_text(value)


def orjson_text(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return repr(value)


def utf8(value: bytes) -> bool:
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True


def parsed(value: bytes | None) -> dict[str, Any]:
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise Undecodable(f"not JSON: {exc}") from exc
    if type(doc) is not dict:
        raise Undecodable("not a JSON object")
    return doc


@functools.lru_cache(maxsize=4)
def ingested_field(ingested: str) -> bytes:
    """`"ingested":"…",` to splice into `event`: one stamp serves a whole batch."""
    return b'"ingested":"%s",' % ingested.encode()


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
