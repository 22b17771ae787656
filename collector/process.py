"""The encode stage's work on a record's text: structured fields, `log.level`, redaction.

One Processor per collector, built from the settings; the parser mode is per container
(annotation `logferry.io/parser[.<container>]`, else `--parser`). `apply` is what the general
path calls per record. `fast_level` lets the fast path keep taking plain lines: it says,
for a line's text as the runtime wrote it (JSON-escaped), either its level (or None), or
that the line needs the general path (a JSON object to parse, a mode that parses every
line). Redaction is checked once per read (`secrets`): the lines of a read that hold a
keyword of a rule go the general path, which redacts, and the others need no redaction.
`levelless` lets the fast path skip even fast_level for the lines whose first bytes name no
level.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson

from collector.levels import detect, undated
from collector.metrics import METRICS
from collector.redact import Redactor, Rule, rules
from collector.structured import Limits, parse

SPELLING = re.compile(rb"\\u00(?:20|[4-7][0-9a-fA-F])").search
"""An escape that may spell part of a keyword (the keywords are ASCII letters and spaces,
and only built-in rules have them): Docker's own escapes (`<>&`, control bytes) cannot."""

OBJECT = re.compile(rb"(?: |\\[trn])*\{").match
"""A text that is a JSON object to parse, seen in its escaped bytes (blanks Docker escapes
as `\\t`, `\\r`, `\\n`), before the cost of unescaping it; others are judged unescaped."""


def scanned(escaped: bytes) -> bool:
    """For a line `secrets` found clean, as the runtime wrote it (JSON-escaped): whether that
    scan speaks for its text and every field parsed from it (`apply`'s `scanned`). Only a
    `\\u` escape makes letters the scan did not see, in the text or once the text is parsed."""
    return escaped.find(b"\\u") < 0


GENERAL = "general"
"""fast_level's answer for a line the fast path must leave to the general path."""


class Processed(NamedTuple):
    message: str
    original: str | None
    """`event.original`: the text, when the message was taken from a parsed field."""
    fields: dict[str, Any] | None
    """What goes under `json`."""
    level: str | None
    redacted: bool


class Processor:
    def __init__(self, limits: Limits, user_rules: Sequence[Rule], builtin: bool) -> None:
        self.limits = limits
        chosen = rules(user_rules, builtin)
        self.redactor = Redactor(chosen) if chosen else None

    def apply(self, text: str, mode: str, scanned: bool = False, cut: bool = False) -> Processed:
        """`scanned`: the line's bytes were found to hold no redaction keyword nor any `\\u`
        escape (the chunk path's `secrets`), so neither the text nor a field parsed from it
        can hold one (see Redactor.clean): redaction has nothing to do. `cut`: the text
        was cut at --max-record-bytes, perhaps inside a secret (Redactor.apply)."""
        parsed = parse(text, mode, self.limits)
        if parsed.reason is not None:
            METRICS.parse_refused.labels(parsed.reason).inc()
        message = text if parsed.message is None else parsed.message
        original, fields = parsed.original, parsed.fields
        redacted = False
        if self.redactor is not None and not scanned:
            message, original, hits = self.redactor.apply(message, original, fields, cut)
            for name in hits:
                METRICS.redactions.labels(name).inc()
            redacted = bool(hits)
        return Processed(message, original, fields, parsed.level, redacted)

    def secrets(self, data: bytes) -> list[int] | None:
        """Offsets in `data` (whole lines as the runtime wrote them) of every redaction
        keyword: the lines holding them need the general path, the others do not. None
        when every line needs it (a user rule has no keywords)."""
        return [] if self.redactor is None else self.redactor.keyword_offsets(data)

    def levelless(self, data: bytes, mode: str) -> bool:
        """Whether fast_level gives None for every line of `data` (lines `secrets` found
        clean) whose text starts as collector.fastpath.NO_LEVEL_* says: true in the modes
        that parse objects only (or nothing) unless an escape may spell a keyword."""
        if mode != "auto" and mode != "none":
            return False
        return self.redactor is None or SPELLING(data) is None

    def fast_level(self, escaped: bytes, mode: str) -> str | None:
        """The level of a plain line's text (JSON-escaped, ASCII), None, or GENERAL.

        For a line `secrets` found clean: a keyword hidden behind escapes (`\\u0041KIA`, which
        no runtime writes but a file may hold) is looked for in the text itself.
        """
        if mode != "auto" and mode != "none":
            return GENERAL
        if mode == "auto" and OBJECT(escaped) is not None:
            return GENERAL
        # find, not `in`: bytes.__contains__ first tries its argument as an integer, and
        # makes and drops a TypeError each time (a tenth of this step's instructions).
        escapes = escaped.find(b"\\") >= 0
        if undated(escaped) and (self.redactor is None or not escapes or SPELLING(escaped) is None):
            return None
        if escapes:
            text = orjson.loads(b'"' + escaped + b'"')
            if (
                self.redactor is not None
                and SPELLING(escaped) is not None
                and not self.redactor.clean(text)
            ):
                return GENERAL
        else:
            text = escaped.decode()
        if mode == "auto" and text.lstrip(" \t\r\n")[:1] == "{":
            return GENERAL
        return detect(text)
