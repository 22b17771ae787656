"""Rules that decide whether a log line continues the current multi-line record.

The joiner keeps, per container and stream, the first and the last line of the record it holds
and asks `continues(first, previous, line)` for every new line; a False answer flushes the held
record and makes `line` the first line of the next one. The joiner never looks ahead, so neither
can a rule: every decision is taken from those three texts alone (no trailing newline).

Presets follow Fluent Bit's built-in multiline parsers (which come from Google's
fluent-plugin-detect-exceptions), rewritten as checks on (first, previous, line):

java
    Continuation lines are the indented `at ...` frames, `... N more`,
    `... N common frames omitted`, `Caused by:`, `Suppressed:` (and logback's root-cause-first
    `Wrapped by:`), `nested exception is:` with the header after it, the .NET markers that Fluent
    Bit's java parser also knows, and blank lines straight after an exception header or cause.
    They continue whatever record is held, so an exception whose class name has no
    Exception/Error suffix (`com.x.Foo: msg`) keeps its frames.
    As in Fluent Bit, an exception header line (`java.lang.RuntimeException: x`) always starts a
    new record: it is never glued to the log line before it (`... ERROR [main] c.x.App - request
    failed`), because one line at a time that looks exactly like two unrelated lines. When the
    log line and its trace must travel together, use a first-line regex on the log prefix
    instead, e.g. `^\\d{4}-\\d{2}-\\d{2} `.
python
    `Traceback (most recent call last):` opens a record (also at the end of a log line, for
    `log.error(traceback.format_exc())` with a prefix); indented lines continue it; the first
    unindented `Name: message` (or bare `Name`) line after them closes it and belongs to it (an
    exception group closes on its bottom `+-----` border instead).
    Chained exceptions stay in the record: one blank line after the closing line continues it,
    so does the chain message and the blank line and `Traceback` header after it. Because we
    cannot look ahead, a traceback followed by a blank line keeps that blank line, and a second
    traceback separated from the first by just one blank line is glued to it. As in Fluent Bit,
    the `logger.exception()` message line before the traceback is a record of its own.
go
    `panic: `, `fatal error: ` or `http: panic serving` opens a record; then blank lines,
    `[signal ...]`, `goroutine N [state]:`, `runtime stack:`, calls (`main.main()`), their
    indented `file:line` lines, `created by ...`, `...additional frames elided...` and
    `exit status N` continue it.

Anything else is taken as a regular expression matching the first line of a record: every line
it does not match continues the record held (Filebeat's `negate: true, match: after`, Fluent
Bit's `start_state` pattern). Like both, it is searched for anywhere in the line, so anchor it.
"""

from __future__ import annotations

import re
from typing import Final, Protocol

__all__ = ["FirstLineRule", "GoRule", "JavaRule", "MultilineRule", "PythonRule", "rule_for"]

_INDENT: Final = (" ", "\t")


class MultilineRule(Protocol):
    name: str

    def continues(self, first: str, previous: str, line: str) -> bool:
        """True when `line` belongs to the record whose first line is `first` and whose last
        line so far is `previous`."""
        ...


# Fluent Bit's java start pattern ends in [:\r\n]; our texts carry no newline, so "end of text"
# stands in for it and a bare `java.lang.NullPointerException` still counts as a header.
_JAVA_HEADER: Final = re.compile(r".(?:Exception|Error|Throwable|V8 errors stack trace)(?::|$)")
_JAVA_CAUSE: Final = re.compile(r"[\t ]*(?:Caused by|Suppressed|Wrapped by):")
_JAVA_CONTINUATION: Final = re.compile(
    r"[\t ]+(?:eval )?at "
    r"|[\t ]*(?:Caused by:|Suppressed:|Wrapped by:|nested exception is:"
    r"|\.\.\. \d+ (?:more|common frames omitted))"
    # .NET, kept because Fluent Bit's java parser carries them too
    r"|[\t ]+--- End of inner exception stack trace ---$"
    r"|--- End of stack trace from previous location where exception was thrown ---$"
)
_JAVA_AFTER_NESTED: Final = re.compile(r"nested exception is:[\t ]*$")


class JavaRule:
    """JVM stack traces (Java, Kotlin, Scala, logback), plus the .NET bits Fluent Bit accepts."""

    __slots__ = ()
    name: str = "java"

    def continues(self, first: str, previous: str, line: str) -> bool:
        if not line:
            # An exception message ending in a newline puts a blank line between the header and
            # its frames. A blank previous line can only have been let in by this very branch
            # (unless it is the record's first line), so blank runs stay inside such a gap.
            if previous:
                return (
                    _JAVA_HEADER.search(previous) is not None
                    or _JAVA_CAUSE.match(previous) is not None
                )
            return bool(first)
        if _JAVA_CONTINUATION.match(line) is not None:
            return True
        # RMI and old Spring put the nested exception's header on the line after
        # "nested exception is:"; the substring test keeps ordinary lines off the regex.
        return (
            "nested exception is:" in previous
            and _JAVA_AFTER_NESTED.search(previous) is not None
            and _JAVA_HEADER.search(line) is not None
        )


_PY_HEADER: Final = "Traceback (most recent call last):"
_PY_GROUP_HEADER: Final = "  + Exception Group Traceback (most recent call last):"
_PY_CHAIN: Final = frozenset(
    {
        "During handling of the above exception, another exception occurred:",
        "The above exception was the direct cause of the following exception:",
    }
)
# Fluent Bit's closing-line pattern, widened to a bare name: `raise KeyboardInterrupt` prints
# no colon.
_PY_EXCEPTION: Final = re.compile(r"(?:[^\s.():]+\.)*[^\s.():]+(?::|$)")
# The border under the last sub-exception of a group: `    +------------------------------------`
_PY_GROUP_END: Final = re.compile(r"[\t ]*\+-+")


def _is_traceback(first: str) -> bool:
    return first.endswith(_PY_HEADER) or first == _PY_GROUP_HEADER


class PythonRule:
    """CPython tracebacks, chained exceptions and exception groups included."""

    __slots__ = ()
    name: str = "python"

    def continues(self, first: str, previous: str, line: str) -> bool:
        if not line:
            # Maybe the blank line before or after a chain message. It follows a closing line,
            # a chain message or a group's bottom border: in a traceback record the unindented
            # lines other than the headers are exactly the first two.
            if previous.startswith(_INDENT):
                return _PY_GROUP_END.fullmatch(previous) is not None and _is_traceback(first)
            return bool(previous) and previous != _PY_HEADER and _is_traceback(first)
        if line.startswith(_INDENT):
            # Frames, source, carets and `[Previous line repeated ...]` run from a header up
            # to the closing exception line; a chained exception group's header follows a blank.
            if previous.startswith(_INDENT) or previous in (first, _PY_HEADER):
                return _is_traceback(first)
            return not previous and line == _PY_GROUP_HEADER and _is_traceback(first)
        if not previous:
            return (line in _PY_CHAIN or line == _PY_HEADER) and _is_traceback(first)
        if previous.startswith(_INDENT):
            # The closing `ValueError: bad` line, right after the indented body. An exception
            # group prints its own closing lines indented and ends on a border instead.
            return (
                _PY_EXCEPTION.match(line) is not None
                and _PY_GROUP_END.fullmatch(previous) is None
                and _is_traceback(first)
            )
        return False


_GO_START: Final = re.compile(r"\bpanic: |^fatal error: |http: panic serving")
# `goroutine 7 [chan receive, 2 minutes]:`, and since Go 1.21 with GOTRACEBACK=system
# `goroutine 1 gp=0xc000002380 m=0 mp=0x4e2a00 [running]:`. No `[` before the state's: with
# `.*` there, each `[` of a long line had the rest of the line read again (quadratic).
_GO_GOROUTINE: Final = re.compile(r"goroutine \d+ (?:[^\[]* )?\[[^\]]*\]:")
# `main.main()`, `main.(*Server).handle(0xc000010000, {0x4b2f1a, 0x3})`, `panic({0x4a1b20?, 0x0?})`:
# no space before some `(` past the first character, and `)` last. Written up to the first `(`
# so that it is read once: `\S+\(` tried each `(` of a long line against the rest of it.
_GO_CALL: Final = re.compile(r"\S[^\s(]*\(.*\)")
_GO_ELIDED: Final = "...additional frames elided..."
_GO_RUNTIME_STACK: Final = "runtime stack:"


def _is_go(first: str) -> bool:
    return _GO_START.search(first) is not None


class GoRule:
    """Go panics and fatal errors as the runtime prints them to stderr."""

    __slots__ = ()
    name: str = "go"

    def continues(self, first: str, previous: str, line: str) -> bool:
        if not line:
            # Separates the panic message, the signal line and every goroutine block; Go never
            # prints two in a row, nor one after `exit status`.
            return bool(previous) and not previous.startswith("exit status ") and _is_go(first)
        if line.startswith(_INDENT):
            # A call's `\t/path/file.go:12 +0x1d`, or the `\tpanic: ...` of a re-panic.
            return bool(previous) and _is_go(first)
        # After a goroutine header or a file:line comes a call, or the end of the trace. The line
        # after a trace lands here too, hence the cheap shape checks before the regex.
        if (
            previous.startswith("\t") or previous.endswith("]:") or previous == _GO_RUNTIME_STACK
        ) and (
            line.startswith(("created by ", "exit status "))
            or line == _GO_ELIDED
            or _GO_CALL.fullmatch(line) is not None
        ):
            return _is_go(first)
        if line.startswith(("goroutine ", "[signal ")):
            return (line[0] == "[" or _GO_GOROUTINE.fullmatch(line) is not None) and _is_go(first)
        return line == _GO_RUNTIME_STACK and _is_go(first)


class FirstLineRule:
    """A regular expression that matches the first line of a record; any other line continues."""

    __slots__ = ("_first_line", "name")

    def __init__(self, pattern: str) -> None:
        try:
            self._first_line = re.compile(pattern)
        except (re.error, OverflowError, RecursionError) as exc:
            # OverflowError: `a{99999999999}`; RecursionError: absurdly deep nesting.
            raise ValueError(
                f"invalid multiline rule {pattern!r}: not 'java', 'python' or 'go', "
                f"and not a valid regular expression ({exc})"
            ) from exc
        # rule_for(rule.name) rebuilds the same rule, which keeps configs round-trippable.
        self.name = pattern

    def continues(self, first: str, previous: str, line: str) -> bool:
        return self._first_line.search(line) is None


# The presets hold no state, so every container shares one instance of each.
_PRESETS: Final[dict[str, MultilineRule]] = {
    "java": JavaRule(),
    "python": PythonRule(),
    "go": GoRule(),
}


def rule_for(spec: str) -> MultilineRule:
    """'java', 'python', 'go', or a regular expression that matches the FIRST line of a record
    (every line that does not match it continues the current record, as Fluent Bit's / Filebeat's
    first-line patterns do). Raises ValueError with a clear message naming the spec for an invalid
    regex."""
    preset = _PRESETS.get(spec)
    if preset is not None:
        return preset
    if not spec:
        # An empty pattern matches every line, so it would silently join nothing.
        raise ValueError(
            "invalid multiline rule '': expected 'java', 'python', 'go' "
            "or a regular expression matching the first line of a record"
        )
    return FirstLineRule(spec)
