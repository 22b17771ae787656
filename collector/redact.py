"""Redaction: secrets replaced by `[REDACTED:<rule>]` before a record leaves the node.

Built-in rules (BUILTIN_RULES) and user rules (`NAME=REGEX`, see `user_rule`). A rule's regex
may name the part to hide with a group `secret` (built-ins also use `secret2`, ... for other
spellings); without one the whole match is hidden. So `password=hunter2` becomes
`password=[REDACTED:password]`: the reader still sees which secret was there.

Applied to a record's `message`, `event.original` and parsed string values (`Redactor.apply`).
In parsed fields a rule may also hide a whole value by its key (`{"password": "x"}`, where
the value alone looks like nothing). JSON may spell any character as `\\uXXXX`, and every
parser reads `p\\u0061ssword` as `password`: a text holding such escapes is searched as
spelled plainly (`spelled`), so what its fields hide its text does not keep.

Cost when nothing matches, which is nearly always: each built-in rule names lower-case
keywords one of which any match contains (`bearer`, `passw`, ...); the text is lowered once
and a rule whose keywords are all absent is not run. User rules have no keywords and always
run: their cost is the user's regexes'. Parsed fields are not walked at all when the text
they came from has no keyword and no `\\u` escape (which could spell one), since every key
and string value is then a piece of that text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

MARK = "[REDACTED:{}]"

_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_NOT_MARKED = r"(?!\[REDACTED:)"
"""Before every secret: text already redacted is not redacted (nor counted) again."""


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern[str]
    keywords: tuple[str, ...] = ()
    """Lower-case literals, one of which every match contains; empty: the rule always runs."""
    key: re.Pattern[str] | None = None
    """Parsed field names whose string or number value is hidden whole."""


def _rule(name: str, pattern: str, keywords: tuple[str, ...], key: str | None = None) -> Rule:
    return Rule(name, re.compile(pattern), keywords, re.compile(key) if key else None)


_NAME_PART = r"[\w.\-]{0,64}"
"""What a password key's name holds around `passw`, bounded: unbounded, each `passw` of a
long run of them had the rest of the run read again (quadratic: 256 KiB took 160 s)."""
_PW = rf"{_NAME_PART}passw(?:or)?d{_NAME_PART}"
_QUOTED = r"(?:[^\"\\]|\\.)+"
_ESCAPED_QUOTED = r"(?:[^\"\\]|\\[^\"])+"

# Each rule runs on what the ones before it left: a private key's block first (a password
# rule took `-----BEGIN` for a password and left the key), and secrets before the bearer
# rule, whose token may swallow the name of a key that follows it.
BUILTIN_RULES: tuple[Rule, ...] = (
    _rule(
        "private_key",
        # A block cut short (a truncated record) is hidden to the end of the text.
        r"(?s)-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
        r"(?:.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|.*)",
        ("private key",),
    ),
    _rule(
        "aws_secret_key",
        r"(?i)aws_?secret_?access_?key[\"'\\]*\s*[:=]\s*[\"'\\]*"
        r"(?P<secret>[A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])",
        ("secret",),
        key=r"(?i)secret_?access_?key",
    ),
    _rule("aws_access_key", r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b", ("akia", "asia")),
    _rule(
        "password",
        "(?i)"
        # password=x, db_password="a b", password=\"x\" (inside a JSON string). No
        # `\b[\w.-]*` before it: tried at every word start of a long dotted run, that
        # is quadratic.
        rf"passw(?:or)?d{_NAME_PART}=(?:\"{_NOT_MARKED}(?P<secret>{_QUOTED})\""
        rf"|\\\"{_NOT_MARKED}(?P<secret2>{_ESCAPED_QUOTED})\\\""
        rf"|{_NOT_MARKED}(?P<secret3>[^\s&,;\"'\\]+))"
        # "password": "x" (JSON), "password": 1234, \"password\":\"x\" (JSON inside JSON),
        # 'password': 'x' (a Python dict printed)
        rf"|\"{_PW}\"\s*:\s*(?:\"{_NOT_MARKED}(?P<secret4>{_QUOTED})\""
        r"|(?P<secret5>-?\d[\d.eE+\-]*)"
        # "password": {"new": "x"}: the object, up to its first nested one. A list
        # likewise, from its first value: values past COPIES are not searched for as
        # copies, so they hide here or nowhere.
        r"|(?P<secret8>\{[^{}]*\}?)"
        rf"|{_NOT_MARKED}(?P<secret9>\[\s*[^\s\[\]][^\[\]]*\]?))"
        rf"|\\\"{_PW}\\\"\s*:\s*\\\"{_NOT_MARKED}(?P<secret6>{_ESCAPED_QUOTED})\\\""
        rf"|'{_PW}'\s*:\s*'{_NOT_MARKED}(?P<secret7>(?:[^'\\]|\\.)+)'",
        ("passw",),
        key=r"(?i)passw(?:or)?d",
    ),
    _rule(
        "bearer",
        # 16 characters at least: "bearer of bad news", "Bearer authentication" stay.
        rf"(?i)\bbearer[ \t]+{_NOT_MARKED}(?P<secret>[A-Za-z0-9\-._~+/]{{16,}}=*)",
        ("bearer",),
    ),
)


_ASCII_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u00([2-7][0-9a-fA-F])")
"""A `\\u` escape of a printable ASCII character, not itself an escaped backslash's tail."""


def _plain(m: re.Match[str]) -> str:
    char = chr(int(m.group(2), 16))
    if char == "\x7f":
        return m.group()
    # A quote or backslash stays escaped, as JSON must write it inside a string.
    return m.group(1) + ("\\" + char if char in '"\\' else char)


def spelled(text: str) -> str:
    """`text` with its `\\u` escapes of printable ASCII written as the characters they
    spell: the same JSON, now readable by the rules."""
    return _ASCII_ESCAPE.sub(_plain, text) if "\\u" in text else text


def user_rule(spec: str) -> Rule:
    """`NAME=REGEX` -> a Rule; ValueError naming the problem (for the settings' check)."""
    name, sep, regex = spec.partition("=")
    name = name.strip()
    if not sep or not _NAME.fullmatch(name) or not regex:
        raise ValueError(f"expected NAME=REGEX with NAME of letters, digits, _ . -, got {spec!r}")
    try:
        pattern = re.compile(regex)
    except re.error as exc:
        raise ValueError(f"rule {name}: not a regular expression: {exc}") from exc
    if pattern.search("") is not None:
        raise ValueError(f"rule {name}: the regex matches the empty string")
    return Rule(name, pattern)


def rules(user: Iterable[Rule] = (), builtin: bool = True) -> tuple[Rule, ...]:
    """Built-ins (unless `builtin` is false) then user rules; a user rule named as a
    built-in replaces it (to tune one that hides too much)."""
    mine = list(user)
    names = {r.name for r in mine}
    base = [r for r in BUILTIN_RULES if r.name not in names] if builtin else []
    return (*base, *mine)


def _replacer(rule: Rule) -> str | Callable[[re.Match[str]], str]:
    mark = MARK.format(rule.name)
    groups = [i for n, i in rule.pattern.groupindex.items() if n.startswith("secret")]
    if not groups:
        return mark

    def replace(m: re.Match[str]) -> str:
        for g in groups:
            start, end = m.span(g)
            if start >= 0:
                base = m.start()
                whole = m.group()
                return whole[: start - base] + mark + whole[end - base :]
        return mark

    return replace


_LEFT = r"(?<![^\s\"'=:\[,])(?<!\[REDACTED:)"
_RIGHT = r"(?![^\s\"',\]}&;])"
"""Around a value in a text (JSON, logfmt, `key: value`): the value whole, not a part of a
longer word, nor a mark's rule name (a password `password`)."""

COPY_MIN = 6
"""Characters a string hidden by its key needs to be hidden wherever else it stands whole:
`0`, `1`, `x` or `info` under a password key stand whole in many places that are no copy
of it (a retry count, a step, a level). Numbers, however long, are never searched for."""

COPIES = 64
"""Values hidden by their key searched for as copies, at most, in a record: each is a
branch of the pattern run over its every string. Those beyond it stay hidden where their
key stands, in the fields and (a password rule's object or list) in the text."""


def copy_hider(values: dict[str, str]) -> Callable[[str], str]:
    """What hides each of `values` (value -> rule name) wherever it stands whole in a text,
    as written or JSON-escaped: a copy of a secret under another key shows it as well."""
    names: dict[str, str] = {}
    for value, name in values.items():
        names.setdefault(value, name)
        names.setdefault(orjson.dumps(value).decode()[1:-1], name)
    # Longest first: of `a b` and `a`, `a b` is hidden whole.
    spellings = "|".join(re.escape(v) for v in sorted(names, key=len, reverse=True))
    pattern = re.compile(f"{_LEFT}(?:{spellings}){_RIGHT}")

    def mark(m: re.Match[str]) -> str:
        return MARK.format(names[m.group()])

    return lambda text: pattern.sub(mark, text)


_CUT_SECRETS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("bearer", r"(?i)\bbearer[ \t]+(?P<secret>[A-Za-z0-9\-._~+/]+=*)$"),
        (
            "password",
            r"(?i)passw(?:or)?d[\w.\-]{0,64}(?:\\?[\"'])?\s*[:=]\s*(?:\\?[\"'])?"
            rf"{_NOT_MARKED}(?P<secret>[^\s\"'\\&,;]+)$",
        ),
        (
            "aws_secret_key",
            r"(?i)secret_?access_?key[\"'\\]*\s*[:=]\s*[\"'\\]*(?P<secret>[A-Za-z0-9/+=]+)$",
        ),
        # Two characters past the prefix at least: `ASIA` alone ends prose too.
        ("aws_access_key", r"\b(?P<secret>(?:AKIA|ASIA)[A-Z0-9]{2,16})$"),
    )
)
"""A secret's key and the start of its value at the very end of a text."""

CUT_WINDOW = 512
"""Characters at a cut text's end searched for a secret begun there."""


def cut_tail(text: str) -> tuple[str, tuple[str, ...]]:
    """A text cut short, with a secret begun at its end hidden: `Bearer eyJhbGciOiJI` or
    `key=AKIAIOSFOD`, too short for the rules, is the head of a secret all the same."""
    start = max(0, len(text) - CUT_WINDOW)
    window = text[start:]
    for name, pattern in _CUT_SECRETS:
        found = pattern.search(window)
        if found is not None:
            return text[: start + found.start("secret")] + MARK.format(name), (name,)
    return text, ()


def hide_copies(fields: dict[str, Any], hide: Callable[[str], str]) -> None:
    """`hide` (a `copy_hider`) applied to every string value of `fields`, in place."""
    stack: list[Any] = [fields]
    while stack:
        node = stack.pop()
        entries = node.items() if type(node) is dict else enumerate(node)
        for slot, value in list(entries):
            if type(value) is dict or type(value) is list:
                stack.append(value)
            elif type(value) is str:
                node[slot] = hide(value)


class Redactor:
    """Applies a set of rules; one per collector, shared by every record."""

    KEY_CACHE = 4096
    """Field names remembered with the key rule they match (names repeat across records)."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        self.replacers = tuple(_replacer(r) for r in self.rules)
        self.always = any(not r.keywords for r in self.rules)
        """A rule without keywords (a user rule): every text must be searched."""
        self.keywords = tuple(dict.fromkeys(kw for r in self.rules for kw in r.keywords))
        self.bytes_keywords = tuple(kw.encode() for kw in self.keywords)
        self.key_rules = tuple(r for r in self.rules if r.key is not None)
        self.keys: dict[str, str | None] = {}

    def text(self, text: str) -> tuple[str, tuple[str, ...]]:
        """The text with every match hidden, and the names of the rules that hit. A text
        with escapes is searched as `spelled`, and given back so only when a rule hit."""
        plain = spelled(text)
        if plain is not text:
            redacted, hits = self._text(plain)
            return (redacted, hits) if hits else (text, ())
        return self._text(text)

    def _text(self, text: str) -> tuple[str, tuple[str, ...]]:
        if not self.always and self._no_keyword(text):
            return text, ()
        hits: list[str] = []
        for i in self._candidates(text):
            text, n = self.rules[i].pattern.subn(self.replacers[i], text)
            if n:
                hits.append(self.rules[i].name)
        return text, tuple(hits)

    def _no_keyword(self, text: str | bytes) -> bool:
        # str.lower() is slow on non-ASCII text; the keywords are ASCII, so lowering the
        # UTF-8 bytes (ASCII letters only) finds the same ones at a third of the cost.
        keywords: tuple[str, ...] | tuple[bytes, ...] = self.bytes_keywords
        if type(text) is bytes:
            lowered: str | bytes = text.lower()
        elif text.isascii():
            lowered = text.lower()
            keywords = self.keywords
        else:
            lowered = text.encode("utf-8", "surrogatepass").lower()
        # A plain loop: all() over a generator costs a fifth more, on every record.
        for keyword in keywords:  # noqa: SIM110
            if keyword in lowered:
                return False
        return True

    def _candidates(self, text: str) -> list[int]:
        """Indexes of the rules that may match, in rule order."""
        lowered = text.lower()
        return [
            i
            for i, rule in enumerate(self.rules)
            if not rule.keywords or any(kw in lowered for kw in rule.keywords)
        ]

    def clean(self, raw: str | bytes, parsed: bool = False) -> bool:
        """Whether nothing in `raw` (nor, when `parsed`, any key or string value parsed
        from it) can match.

        `raw` may also be bytes of whole lines as the runtime wrote them (Docker's JSON
        escaping never touches the keywords' letters): when they are clean, no record made
        of those lines alone needs `apply`, so the collector's fast path can stay on. A
        record joined from 16 KiB pieces may have a keyword cut in two: check its text.
        """
        if self.always or (parsed and ("\\u" in raw if type(raw) is str else b"\\u" in raw)):
            return False
        return self._no_keyword(spelled(raw) if type(raw) is str else raw)

    def keyword_offsets(self, data: bytes) -> list[int] | None:
        """Where a keyword of a rule starts in `data`, whole lines as the runtime wrote them
        (the runtime's frame between two lines' texts holds no keyword's letters): only
        the lines holding one may need `apply` (see `clean`). None when a rule has no
        keywords: every line may."""
        if self.always:
            return None
        lowered = data.lower()
        found: list[int] = []
        for keyword in self.bytes_keywords:
            at = lowered.find(keyword)
            while at >= 0:
                found.append(at)
                at = lowered.find(keyword, at + 1)
        return found

    def fields(self, fields: dict[str, Any]) -> tuple[tuple[str, ...], dict[str, str]]:
        """Hides secrets in parsed fields in place: the names of the rules that hit, and
        up to COPIES of the strings of COPY_MIN characters hidden by their key (with the
        rule's name), which the text they came from may still hold. Everything in an
        object under a key a key rule ends is hidden too (`{"password": {"new": "x"}}`)."""
        hits: dict[str, None] = {}
        by_key: dict[str, str] = {}
        stack: list[tuple[Any, str | None, str | None]] = [(fields, None, None)]
        while stack:
            node, owner, hidden = stack.pop()
            entries = node.items() if type(node) is dict else enumerate(node)
            for slot, value in list(entries):
                kind = type(value)
                key = slot if type(slot) is str else owner
                if kind is dict or kind is list:
                    below = hidden or (self._owner_rule(slot) if type(slot) is str else None)
                    stack.append((value, key, below))
                    continue
                name = hidden or (self._key_rule(key) if key is not None else None)
                if kind not in (str, int, float):
                    continue
                if name is not None:
                    node[slot] = MARK.format(name)
                    hits[name] = None
                    if (
                        kind is str
                        and len(value) >= COPY_MIN
                        and len(by_key) < COPIES
                        and not value.startswith("[REDACTED:")
                    ):
                        by_key[value] = name
                elif kind is str:
                    new, names = self.text(value)
                    if names:
                        node[slot] = new
                        hits.update(dict.fromkeys(names))
        return tuple(hits), by_key

    def _owner_rule(self, key: str) -> str | None:
        """The key rule whose match ends `key` (`password`, `db_passwords`): everything
        in the object or list under it is hidden; under `password_policy` it is not."""
        for rule in self.key_rules:
            assert rule.key is not None
            found = rule.key.search(key)
            if found is not None and found.end() >= len(key) - (key[-1:] in "sS"):
                return rule.name
        return None

    def _key_rule(self, key: str) -> str | None:
        if key in self.keys:
            return self.keys[key]
        name = next((r.name for r in self.key_rules if r.key and r.key.search(key)), None)
        if len(self.keys) >= self.KEY_CACHE:
            self.keys.clear()
        self.keys[key] = name
        return name

    def apply(
        self,
        message: str,
        original: str | None = None,
        fields: dict[str, Any] | None = None,
        cut: bool = False,
    ) -> tuple[str, str | None, tuple[str, ...]]:
        """A record's (message, event.original, hits), its `fields` redacted in place.

        The arguments are what collector.structured.parse gave (message: the new one, or
        the text); the record's text is `original` when set, else `message`. A `cut` text
        (a record past --max-record-bytes) may end inside a secret too short for its rule
        to see: what follows a secret's key at its very end is hidden (`cut_tail`).
        """
        if self.clean(original if original is not None else message, fields is not None):
            return message, original, ()
        message, hits = self.text(message)
        if original is not None:
            original, more = self.text(original)
            hits += more
        if cut:
            message, more = cut_tail(message)
            hits += more
            if original is not None:
                original, more = cut_tail(original)
                hits += more
        if fields is not None:
            more, by_key = self.fields(fields)
            hits += more
            if by_key:
                # What a key rule hid (an AWS secret under `secret_access_key` of any
                # length, a copy of it under another key) the text rules may not have found.
                hide = copy_hider(by_key)
                message = hide(message)
                if original is not None:
                    original = hide(original)
                hide_copies(fields, hide)
        return message, original, tuple(dict.fromkeys(hits))
