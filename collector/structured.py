"""Structured application logs: a record's JSON object (or logfmt pairs) as fields.

`parse(text, mode)` says what a record gains; it never raises and never fails a record. Text
that is not a usable object stays the record's text, with a `reason` when a parse was tried
and refused, for a counter.

Modes (node default `auto`, per pod by annotation):
- `auto`: a JSON object, recognised by its first non-space character `{` and last `}`;
  every other line costs two character checks (plus the plain-text level detection).
- `json`: the same parse, tried on every line; a line that is not an object has a reason.
- `logfmt`: `key=value key="quoted value"` pairs, and nothing else (strict: prose with one
  `a=b` in it is not logfmt). Values stay strings: logfmt has no types.
- `none`: no parsing (the level is still read from the text).

What the record gains:
- `fields` go under `json.*`, nested as the application wrote them. Keys are kept as they
  are, even when named like a record field (`message`, `@timestamp`, `kubernetes`): under
  `json` they cannot collide with the record's own, and the record's time stays the
  runtime's. Values keep their JSON types, so one key may be a number in one app and an
  object in another: the index template maps `json` so that this never refuses a document.
  A duplicate key keeps its last value (as orjson, Go and browsers do); the text itself is
  never lost (it is the message, or `event.original` when the message was replaced).
- `message`: the object's `message`, else `msg`, when that is a string; that key then leaves
  `fields` (it would be stored twice). Otherwise None: the message stays the text.
- `original`: the text, only when `message` replaced it (ECS `event.original`).
- `level`: from the first of LEVEL_KEYS holding a known level (see collector.levels); for
  text that stays text, from its first words.

Bounds (`Limits`, each with a reason when reached): the text's length in characters, the
nesting depth below `json`, and the number of keys in all objects. Elasticsearch refuses
objects nested deeper than 20 (`index.mapping.depth.limit`, the `flattened` type's
`depth_limit`), so the default depth keeps clear of it. Integers beyond 64 bits become
floats (orjson), so every parsed value can be encoded again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from collector.levels import LEVELS, detect, normalise

MODES = ("auto", "json", "logfmt", "none")

LEVEL_KEYS = ("level", "severity", "lvl", "loglevel", "log.level", "levelname", "log_level")
"""Keys naming a parsed log's level, in this order; also tried capitalised and upper case."""

_LEVEL_SPELLINGS = tuple(
    dict.fromkeys(k for key in LEVEL_KEYS for k in (key, key.capitalize(), key.upper()))
)

MESSAGE_KEYS = ("message", "msg")

TOO_LARGE = "too_large"
TOO_DEEP = "too_deep"
TOO_MANY_FIELDS = "too_many_fields"
INVALID_JSON = "invalid_json"
NOT_OBJECT = "not_object"
INVALID_LOGFMT = "invalid_logfmt"
REASONS = (TOO_LARGE, TOO_DEEP, TOO_MANY_FIELDS, INVALID_JSON, NOT_OBJECT, INVALID_LOGFMT)
"""Why a parse was refused: the label values of the counter of texts kept as text."""


@dataclass(frozen=True)
class Limits:
    """The bounds past which a record is not parsed (its text stays text, with a reason)."""

    max_chars: int = 64 * 1024
    """Longest text parsed, in characters: a bigger object stays text (reason too_large)."""
    max_depth: int = 10
    """Deepest nesting below `json` (an object or array inside the top object is depth 2)."""
    max_fields: int = 500
    """Most keys, counted over all nested objects."""

    def __post_init__(self) -> None:
        for name in ("max_chars", "max_depth", "max_fields"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        # Elasticsearch refuses deeper objects (flattened's depth_limit and
        # index.mapping.depth.limit are 20): deeper would go to the dead-letter topic.
        if self.max_depth > 20:
            raise ValueError(f"max_depth must be at most 20, got {self.max_depth}")


DEFAULT_LIMITS = Limits()


def mode(text: str) -> str:
    """A parser mode from a setting or a pod annotation; ValueError naming the choices."""
    value = text.strip().lower()
    if value not in MODES:
        raise ValueError(f"must be one of {', '.join(MODES)}, got {text!r}")
    return value


class Parsed(NamedTuple):
    fields: dict[str, Any] | None
    """What goes under `json`, or None when the text stays text."""
    message: str | None
    """The new `message`, or None to keep the text."""
    original: str | None
    """`event.original`: the text, when `message` replaced it."""
    level: str | None
    """`log.level`, or None."""
    reason: str | None
    """Why a parse that was tried was refused (one of REASONS), else None."""


_TEXT = {level: Parsed(None, None, None, level, None) for level in (None, *LEVELS)}
"""Results for text that stays text, made once: most records are such."""

_SPACE = " \t\r\n"


def parse(text: str, mode: str = "auto", limits: Limits = DEFAULT_LIMITS) -> Parsed:
    """What a record whose text is `text` gains under `mode` (see the module's docstring)."""
    if mode == "auto" or mode == "json":
        head = text[:1]
        if head and head in _SPACE:
            head = text.lstrip(_SPACE)[:1]
        if head == "{":
            if text[-1:] != "}" and text.rstrip(_SPACE)[-1:] != "}":
                return _refused(text, INVALID_JSON)
            return _json(text, limits)
        if mode == "json":
            return _json(text, limits)
    elif mode == "logfmt":
        return _logfmt(text, limits)
    return _TEXT[detect(text)]


def _refused(text: str, reason: str) -> Parsed:
    return Parsed(None, None, None, detect(text), reason)


def _json(text: str, limits: Limits) -> Parsed:
    if len(text) > limits.max_chars:
        return _refused(text, TOO_LARGE)
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return _refused(text, INVALID_JSON)
    if type(value) is not dict:
        return _refused(text, NOT_OBJECT)
    reason = _over_bounds(text, value, limits)
    if reason is not None:
        return _refused(text, reason)
    return _gained(text, value)


def _over_bounds(text: str, value: dict[str, Any], limits: Limits) -> str | None:
    """TOO_DEEP or TOO_MANY_FIELDS, or None.

    Counting characters first skips the walk for nearly every record: nesting cannot be
    deeper than the number of `{` and `[`, and there are no more keys than `:`.
    """
    if text.count("{") + text.count("[") > limits.max_depth and _deeper(value, limits.max_depth):
        return TOO_DEEP
    # Each key takes 5 characters at least (`,"":0`): short texts are not even counted.
    if (
        len(text) > 5 * limits.max_fields
        and text.count(":") > limits.max_fields
        and _keys(value, limits.max_fields) > limits.max_fields
    ):
        return TOO_MANY_FIELDS
    return None


def _deeper(value: Any, room: int) -> bool:
    """Whether `value` nests deeper than `room` levels of objects and arrays."""
    if room == 0:
        return True
    items = value.values() if type(value) is dict else value
    return any(type(v) in (dict, list) and _deeper(v, room - 1) for v in items)


def _keys(value: Any, most: int) -> int:
    """The number of keys in `value` and below, counting stopped once past `most`."""
    count = 0
    stack = [value]
    while stack and count <= most:
        node = stack.pop()
        if type(node) is dict:
            count += len(node)
            stack.extend(v for v in node.values() if type(v) in (dict, list))
        else:
            stack.extend(v for v in node if type(v) in (dict, list))
    return count


def _gained(text: str, fields: dict[str, Any]) -> Parsed:
    message = None
    for key in MESSAGE_KEYS:
        value = fields.get(key)
        if type(value) is str:
            message = value
            del fields[key]
            break
    return Parsed(fields, message, text if message is not None else None, _level(fields), None)


def _level(fields: dict[str, Any]) -> str | None:
    for key in _LEVEL_SPELLINGS:
        if key in fields:
            level = normalise(fields[key])
            if level is not None:
                return level
    nested = fields.get("log")
    if type(nested) is dict and "level" in nested:
        return normalise(nested["level"])
    return None


_PAIR = r'[A-Za-z_@][\w.\-/@]*=(?:"(?:[^"\\]|\\.)*"|[^\s"=]*)'
_LOGFMT_LINE = re.compile(rf"[ \t]*{_PAIR}(?:[ \t]+{_PAIR})*[ \t\r\n]*")
_LOGFMT_PAIR = re.compile(r'([A-Za-z_@][\w.\-/@]*)=("(?:[^"\\]|\\.)*"|[^\s"=]*)')


def _logfmt(text: str, limits: Limits) -> Parsed:
    if len(text) > limits.max_chars:
        return _refused(text, TOO_LARGE)
    if _LOGFMT_LINE.fullmatch(text) is None:
        return _refused(text, INVALID_LOGFMT)
    pairs = _LOGFMT_PAIR.findall(text)
    if len(pairs) > limits.max_fields:
        return _refused(text, TOO_MANY_FIELDS)
    fields: dict[str, Any] = {}
    for key, raw in pairs:
        fields[key] = _unquote(raw) if raw[:1] == '"' else raw
    return _gained(text, fields)


def _unquote(raw: str) -> str:
    """A quoted logfmt value: Go's strconv.Quote escapes, which JSON's mostly are."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[1:-1]
    return value if type(value) is str else raw[1:-1]
