"""Kafka records -> bulk lines: the target index, `_id` = `event.id`, `event.ingested` added.

A record whose `@timestamp` is missing or not a date Elasticsearch takes is indexed at the
Kafka record's time instead, tagged `timestamp_invalid`, its own value kept in
`event.original_timestamp`: rather than refused, or named into an index from a stray text.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any, NamedTuple, TypedDict

import msgspec
import orjson
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE

PLACEHOLDER = re.compile(r"\{([^{}:]+)(?::([^{}]*))?\}")
UNSAFE = re.compile(r"[^a-z0-9_.+-]+")
NOT_IN_INDEX_NAMES = re.compile(r'[\\/*?"<>| ,#:A-Z]')
SECOND = re.compile(r"(\d{4}-\d\d-\d\d)T([01]\d|2[0-3]):[0-5]\d:[0-5]\d", re.ASCII)
FRACTION_AND_ZONE = re.compile(r"(?:\.\d{1,9})?(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)", re.ASCII)
"""RFC 3339 as Elasticsearch's date_nanos reads it: the second, then what follows it
(ASCII digits only: `\\d` alone takes any script's)."""
DAY = re.compile(r"\d{4}-\d\d-\d\d", re.ASCII)
FIRST_DAY = date(1970, 1, 2)
LAST_DAY = date(2262, 4, 10)
"""date_nanos holds 1970 to 2262; a day inside, whatever the zone offset."""
TIMESTAMP_INVALID = "timestamp_invalid"


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


def valid_stamp(stamp: Any) -> bool:
    """Whether `stamp` is a time Elasticsearch indexes: run once per record."""
    if type(stamp) is not str or not (SECONDS.get(stamp[:19]) or learn_second(stamp[:19])):
        return False
    # The collector's form, `...:SS.fffffffffZ`, is read without a regex: per record, the
    # regex cost more than the rest of the check.
    if stamp[-1] == "Z" and stamp.isascii():
        size = len(stamp)
        return size == 20 or (stamp[19] == "." and 21 < size <= 30 and stamp[20:-1].isdigit())
    return FRACTION_AND_ZONE.fullmatch(stamp, 19) is not None


def valid_index(name: str) -> bool:
    """Elasticsearch's rules for an index name."""
    return (
        0 < len(name.encode()) <= 255
        and name not in (".", "..")
        and not name.startswith(("-", "_", "+"))
        and NOT_IN_INDEX_NAMES.search(name) is None
    )


class IndexName:
    """`logferry-{kubernetes.namespace}-{@timestamp:%Y.%m.%d}` compiled once into getters.

    Per record, only the fields' raw values are read: the name they give, and its JSON
    form for the bulk action, are remembered under those values (a run writes to few
    indices), so the getters that make values safe run once per new value.
    """

    def __init__(self, pattern: str) -> None:
        literal = PLACEHOLDER.sub("", pattern)
        if "{" in literal or "}" in literal:
            raise ValueError(f"unbalanced braces in index pattern {pattern!r}")
        if literal != literal.lower():
            raise ValueError(f"index names are lower case: {pattern!r}")
        getters: list[Getter] = []
        raws: list[RawGetter] = []
        leaves: list[tuple[list[str], Any]] = [
            (["event", "id"], Any),
            (["event", "ingested"], Any),
            # Checked on every record: a document is written again when it is not a date.
            (["@timestamp"], str | None),
        ]
        literals: list[str] = []
        end = 0
        for match in PLACEHOLDER.finditer(pattern):
            literals.append(pattern[end : match.start()])
            field, form = match.group(1), match.group(2)
            if form is not None and field != "@timestamp":
                raise ValueError(f"only {{@timestamp:FORMAT}} takes a format, not {field}")
            if form is not None:
                getters.append(day_getter(form))
                raws.append(raw_day)
            else:
                getters.append(field_getter(field))
                raws.append(raw_getter(field.split(".")))
            # Text or null only: any other value is named from orjson's reading of it (an
            # integer beyond 64 bits is a float there).
            leaves.append((field.split("."), str | None))
            end = match.end()
        literals.append(pattern[end:])
        self.fallback = "unknown".join(literals)
        """The name when the fields give no valid one: the pattern, every field unknown."""
        if not valid_index(self.fallback):
            raise ValueError(f"index pattern {pattern!r} gives invalid names: {self.fallback!r}")
        self.made = filled("%s".join(part.replace("%", "%%") for part in literals), getters)
        self.key = raw_key(raws)
        self.known: dict[tuple[Any, ...], tuple[str, bytes]] = {}
        self.decode_fields = msgspec.json.Decoder(only(leaves)).decode
        """A record's JSON -> a dict of only the fields a document needs: the name's, and
        `event`'s `id` and `ingested`."""

    def __call__(self, doc: dict[str, Any]) -> str:
        return self.named(doc)[0]

    def named(self, doc: dict[str, Any]) -> tuple[str, bytes]:
        """The index of a document and its name as a JSON string: called once per record."""
        key = self.key(doc)
        try:
            return self.known[key]
        except (KeyError, TypeError):
            return self.make(doc, key)

    def make(self, doc: dict[str, Any], key: tuple[Any, ...]) -> tuple[str, bytes]:
        index = self.made(doc)
        if not valid_index(index):
            index = self.fallback
        named = (index, orjson.dumps(index))
        # Only text and absent values are remembered: 1, 1.0 and True are one dict key, and
        # not one name; objects and lists are not keys at all.
        if len(self.known) < 10_000 and all(type(v) is str or v is None for v in key):
            self.known[key] = named
        return named


def only(leaves: list[tuple[list[str], Any]]) -> type:
    """A TypedDict of just these paths, each of its type: msgspec checks the rest of the
    JSON as it skips it, but builds no object for it. Where one path ends inside another,
    the shorter is read whole, with its own type."""
    tree: dict[str, Any] = {}
    for path, kind in leaves:
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
            if type(node) is not dict:
                break
        else:
            node[path[-1]] = kind

    def typed(node: dict[str, Any]) -> type:
        fields = {k: typed(v) if type(v) is dict else v for k, v in node.items()}
        return TypedDict("Fields", fields, total=False)  # type: ignore[operator]

    return typed(tree)


Getter = Callable[[dict[str, Any]], str]
RawGetter = Callable[[dict[str, Any]], Any]


def raw_getter(path: list[str]) -> RawGetter:
    """The value at a field's path as it is, None where the path ends early.

    Without exceptions: records that lack the field are common (no namespace), and raising
    costs more than the whole lookup.
    """
    if len(path) == 1:
        (first,) = path
        return lambda doc: doc.get(first)
    if len(path) == 2:
        first, second = path

        def get(doc: dict[str, Any]) -> Any:
            inner = doc.get(first)
            return inner.get(second) if type(inner) is dict else None

        return get

    def walk(doc: dict[str, Any]) -> Any:
        value: Any = doc
        for key in path:
            if type(value) is not dict:
                return None
            value = value.get(key)
        return value

    return walk


def raw_day(doc: dict[str, Any]) -> Any:
    """What of `@timestamp` its date comes from: the first ten characters of the text."""
    stamp = doc.get("@timestamp")
    return stamp[:10] if type(stamp) is str else None


def raw_key(raws: list[RawGetter]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    if len(raws) == 1:
        (only,) = raws
        return lambda doc: (only(doc),)
    if len(raws) == 2:
        first, second = raws
        return lambda doc: (first(doc), second(doc))
    return lambda doc: tuple([get(doc) for get in raws])


def filled(form: str, getters: list[Getter]) -> Getter:
    """`form % (values of the getters)`: runs once per new combination of values."""
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
        day = stamp[:10]
        text = days.get(day)
        if text is None:
            if not valid_day(day):
                return "unknown"
            text = form.replace("%Y", day[0:4]).replace("%m", day[5:7]).replace("%d", day[8:10])
            if len(days) < 10_000:
                days[day] = text
        return text

    return get


class Document(NamedTuple):
    index: str
    id: str | None
    lines: bytes
    """The `create` action and the document, each with its newline: the bulk body's part."""


new_document = functools.partial(tuple.__new__, Document)
"""Document((index, id, lines)) without the NamedTuple's Python-level __new__ (per record)."""

EVENT = b'"event"'
NEWLINE = ord("\n")
CREATE = b'{"create":{"_index":'
ID = b',"_id":'
END = b"}}\n"


class Undecodable(ValueError):
    """A Kafka record that is not a JSON object: it goes to the dead-letter topic."""


def document(
    value: bytes | None,
    index_name: IndexName,
    ingested: str,
    kafka_time: tuple[int, int] | None = None,
) -> Document:
    """A Kafka record's value (None for a record without one) -> its bulk lines.

    `kafka_time` is the record's (timestamp type, milliseconds), as Message.timestamp()
    gives it: the document's time when its own `@timestamp` is not one.
    """
    doc = fields_of(value, index_name)
    # The collector writes compact JSON with one `"event":{"id":…`: there the field is
    # spliced in, which is much cheaper than encoding the whole record again.
    if (
        doc is not None
        and (event := doc.get("event"))
        and "ingested" not in event
        and valid_stamp(doc.get("@timestamp"))
        and (at := value.find(EVENT)) >= 0
        and value.startswith(b":{", at + len(EVENT))
        and value.rfind(EVENT) == at
    ):
        # The only `"event"` in the record, and an object: the record's own event.
        at += len(EVENT) + 2
        source = (value[:at], ingested_field(ingested), value[at:], b"\n")
        index, quoted = index_name.named(doc)
    else:
        doc = parsed(value)
        event = doc.get("event")
        if type(event) is not dict:
            event = None
        stamp = doc.get("@timestamp", MISSING)
        if not valid_stamp(stamp):
            doc["@timestamp"] = stamp_of(kafka_time, ingested)
            tag(doc, TIMESTAMP_INVALID)
            if stamp is not MISSING:
                event = doc["event"] = event or {}
                event["original_timestamp"] = stamp if type(stamp) is str else orjson_text(stamp)
        # Named from the record as it came, but for a time that was none, as above:
        # `{event}` is in the name before `ingested` is in the event.
        index, quoted = index_name.named(doc)
        if event is None:
            event = doc["event"] = {}
        event["ingested"] = ingested
        try:
            source = (orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE),)
        except orjson.JSONEncodeError as exc:
            # orjson reads 1024 levels deep but writes 255.
            raise Undecodable(f"cannot be written again: {exc}") from exc
    doc_id = event.get("id")
    # One join of the parts, without formatting the action first: this runs per record.
    if type(doc_id) is not str or not doc_id:
        return new_document((index, None, b"".join((CREATE, quoted, END, *source))))
    return new_document(
        (index, doc_id, b"".join((CREATE, quoted, ID, orjson.dumps(doc_id), END, *source)))
    )


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


def orjson_text(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return repr(value)


def fields_of(value: bytes | None, index_name: IndexName) -> dict[str, Any] | None:
    """The fields a document needs, read without building the rest of the record; None
    where the record must be read in full: a record that is not valid UTF-8 (msgspec does
    not check the UTF-8 of what it skips, so it is checked here: a tenth of a node's
    records hold non-ASCII text, and reading them in full costs twice as much), holds a
    line break (the bulk body is split at line breaks, so it is encoded again) or is not a
    JSON object of the usual shape."""
    # `NEWLINE in value` is memchr; `b"\n" in value` is a slower general search.
    if type(value) is not bytes or NEWLINE in value:
        return None
    if not value.isascii():
        try:
            value.decode()
        except UnicodeDecodeError:
            return None
    try:
        return index_name.decode_fields(value)
    except (msgspec.MsgspecError, RecursionError):
        # RecursionError: msgspec nests no deeper than the stack; orjson goes to 1024.
        return None


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
