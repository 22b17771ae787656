"""`log.level`: a record's severity as one of trace, debug, info, warn, error, fatal.

Two sources, both cheap and both conservative (a wrong level is worse than none, since
Kibana colours and the "Errors" search trust it):

- `normalise(value)`: a parsed field (`level`, `severity`, ...) of a JSON or logfmt log.
  Names in any case and their common synonyms, and the numbers that mean one thing only:
  pino/bunyan's 10..60 and syslog's 0..7 severities. Python's numeric levels (10 = debug)
  clash with pino's (10 = trace) and are not guessed: JSON loggers for Python write the name.
- `detect(text)`: plain text, from its first words only: a level word (`ERROR ...`,
  `[warn] ...`, `Error: ...`), a level word after a leading date or time (Java, Python,
  Go, nginx layouts; a line led by other digits, such as an address, has none) or after
  a bracketed thread name (`[main] WARN ...`), a klog/glog prefix (`E1130 10:00:00.123456
  ...`), Ruby Logger's (`E, [2026-11-30T10:00:00.123456 #1] ERROR -- : ...`), a syslog
  `<PRI>`, or a logfmt `level=` among the first 200 characters. A word in lower or mixed
  case counts only when bracketed or followed by `:`, so prose such as "Debug mode on" or
  "error rates fell" gives no level. A bracketed word padded to a fixed width (`[INFO ]`,
  `[ WARN]`) counts as if unpadded.

Unknown stays None. The stream is never used: programs write anything to stderr.
"""

from __future__ import annotations

LEVELS = ("trace", "debug", "info", "warn", "error", "fatal")

_WORDS: dict[str, str] = {
    "trace": "trace",
    "trc": "trace",
    "finest": "trace",
    "finer": "trace",
    "verbose": "trace",
    "debug": "debug",
    "dbg": "debug",
    "fine": "debug",
    "info": "info",
    "inf": "info",
    "information": "info",
    "informational": "info",
    "notice": "info",
    "warn": "warn",
    "wrn": "warn",
    "warning": "warn",
    "error": "error",
    "err": "error",
    "erro": "error",
    "severe": "error",
    "dpanic": "error",
    "fatal": "fatal",
    "ftl": "fatal",
    "crit": "fatal",
    "critical": "fatal",
    "alert": "fatal",
    "emerg": "fatal",
    "emergency": "fatal",
    "panic": "fatal",
    "pnc": "fatal",
}
"""Level words, lower-cased. `dpanic` (zap) panics only in development: an error in production."""

_ONE_LETTER = {"t": "trace", "d": "debug", "i": "info", "w": "warn", "e": "error", "f": "fatal"}
"""One-letter levels: trusted only in a field named as a level."""

_SYSLOG = ("fatal", "fatal", "fatal", "error", "warn", "info", "info", "debug")
"""Syslog severities 0 (emerg) .. 7 (debug)."""

_NUMBERS: dict[int, str] = {
    **dict(enumerate(_SYSLOG)),
    10: "trace",
    20: "debug",
    30: "info",
    40: "warn",
    50: "error",
    60: "fatal",
}
_NUMBER_TEXT = {str(n): level for n, level in _NUMBERS.items()}

_KLOG = {"I": "info", "W": "warn", "E": "error", "F": "fatal"}
_RUBY: dict[str, str | None] = {
    "D": "debug",
    "I": "info",
    "W": "warn",
    "E": "error",
    "F": "fatal",
    "A": None,
}
"""Ruby Logger's severity letters. `A` (UNKNOWN, written `ANY`) is logged at any threshold
and says nothing of severity."""
_DIGITS = frozenset("0123456789")
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_INITIALS = frozenset(w[0] for w in _WORDS) | frozenset(w[0].upper() for w in _WORDS)
"""First letters of level words: a line starting with another letter has no level word."""

LOGFMT_WINDOW = 200
"""How far into a line `level=` is looked for (logrus and slog put it second, after time=)."""


def normalise(value: object) -> str | None:
    """The level a parsed field's value names, or None."""
    if isinstance(value, str):
        word = value.strip().lower()
        return _WORDS.get(word) or _ONE_LETTER.get(word) or _NUMBER_TEXT.get(word)
    # bool is an int: `"level": true` names no level.
    if type(value) is int:
        return _NUMBERS.get(value)
    return None


def detect(text: str) -> str | None:
    """The level plain text announces in its first words, or None."""
    first = text[:1]
    if first in _DIGITS:
        # Only a date or a time leads to a level: access logs (an address first) stop here.
        return _after_stamp(text) if _dated(text) else None
    if first in _LETTERS:
        if first in _KLOG and _klog(text):
            return _KLOG[first]
        if first in _RUBY and text[1:4] == ", [" and _dated(text[4:9]):
            # The logger's own severity, whatever `level=` its message holds.
            return _RUBY[first]
        level = _first_word(text) if first in _INITIALS else None
        return level if level is not None else _logfmt(text)
    if first == "[":
        if _dated(text[1:6]):
            return _after_stamp(text)
        tokens = text[:96].split(None, 3)
        return _word_level(tokens[0]) or _bracketed(tokens, 0)
    if first == "<" and text[1:2] in _DIGITS:
        return _syslog(text)
    if first == "<" or first == "(":
        return _first_word(text)
    return None


def undated(escaped: bytes) -> bool:
    """For a line's text as the runtime wrote it (JSON-escaped): True when it starts with a
    digit that begins no date or time, so `detect` finds no level (access logs, mostly).
    Judged on its first bytes alone, without decoding the line."""
    head = escaped[:5]
    # find, not `in`, which raises and drops a TypeError each time (collector.process).
    if not head[:1].isdigit() or not head.isascii() or head.find(b"\\") >= 0:
        return False
    if head[4:5] in (b"-", b"/"):
        return not head[:4].isdigit()
    return not (head[2:3] == b":" and head[:2].isdigit())


def _dated(text: str) -> bool:
    """Starts with a date (`2026-11-30`, `2026/11/30`) or a time (`10:00:00`)."""
    if text[4:5] in ("-", "/"):
        return text[:4].isdigit()
    return text[2:3] == ":" and text[:2].isdigit()


def _first_word(text: str) -> str | None:
    words = text[:24].split(None, 1)
    return _word_level(words[0]) if words else None


def _word_level(token: str) -> str | None:
    """`ERROR`, `[warn]`, `Error:`, `INFO:root:...` -> the level; `Debug`, `error` -> None."""
    if token[0] in "[(<":
        close = token.find("]" if token[0] == "[" else ")" if token[0] == "(" else ">")
        if close < 0:
            return None
        word = token[1:close]
        marked = True
    else:
        word, colon, _ = token.partition(":")
        marked = bool(colon)
    if not 3 <= len(word) <= 13:
        return None
    level = _WORDS.get(word.lower())
    if level is None or not (marked or word.isupper()):
        return None
    return level


def _klog(text: str) -> bool:
    """`Lmmdd hh:mm:ss.uuuuuu ...` (klog, glog)."""
    return (
        len(text) > 14
        and text[1:5].isdigit()
        and text[5] == " "
        and text[8] == ":"
        and text[6:8].isdigit()
    )


def _syslog(text: str) -> str | None:
    """`<PRI>`: facility * 8 + severity."""
    close = text.find(">", 1, 5)
    digits = text[1:close]
    if close < 0 or not digits.isdigit():
        return None
    return _SYSLOG[int(digits) % 8] if int(digits) < 192 else None


def _after_stamp(text: str) -> str | None:
    """A level word after a leading timestamp (and at most one bracketed thread name).

    `2026-11-30 10:00:00,123 ERROR app: ...` (Python), `2026-11-30T10:00:00.123Z  INFO 1 ---`
    (Spring Boot), `10:00:00.123 [main] WARN c.e.A - ...` (logback), `2026/11/30 10:00:00
    [error] 7#7: ...` (nginx), `[2026-11-30 10:00:00] ERROR ...`.
    """
    tokens = text[:96].split(None, 5)
    at = 1
    # The timestamp's other pieces: a time, a zone.
    while at < 4 and at < len(tokens):
        token = tokens[at]
        if not (
            token[0] in _DIGITS
            or (token[0] in "[+-" and token[1:2] in _DIGITS)
            or token in ("Z", "UTC", "GMT")
        ):
            break
        at += 1
    if at >= len(tokens):
        return None
    word = tokens[at]
    level = _word_level(word)
    if level is None and word[0] == "[":
        level = _bracketed(tokens, at)
    return level


def _bracketed(tokens: list[str], at: int) -> str | None:
    """The level at a bracket tokens[at] that holds none as it stands: the bracket padded,
    or a name (a thread) before the level word."""
    if at + 1 >= len(tokens):
        return None
    word = tokens[at]
    after = tokens[at + 1]
    if word[-1] != "]":
        return _padded(word, after)
    level = _word_level(after)
    if level is None and after[0] == "[" and at + 2 < len(tokens):
        level = _padded(after, tokens[at + 2])
    return level


def _padded(word: str, after: str) -> str | None:
    """A bracketed level that padding to a fixed width split in two: log4j's `[%-5p]` writes
    `[INFO ]`, `[%5p]` `[ INFO]`, Python's `[%(levelname)-8s]` `[WARNING ]`."""
    if "]" in word or not (word == "[" or after[0] == "]"):
        return None
    return _word_level(word + after)


def _logfmt(text: str) -> str | None:
    at = text.find("level=", 0, LOGFMT_WINDOW)
    if at < 0 or (at > 0 and text[at - 1] not in " \t"):
        return None
    value = text[at + 6 : at + 6 + 16].split(None, 1)
    if not value:
        return None
    return normalise(value[0].strip('"'))
