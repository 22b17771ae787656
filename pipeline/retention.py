"""`python -m pipeline retention`: delete the daily indices older than the days kept.

The indices to consider are those the `--index` pattern names: its literal parts must
match, each `{field}` may be anything, and `{@timestamp:FORMAT}` gives the index's period.
An index is old when its period ended more than `keep_days` days before today (UTC): with
`%Y.%m.%d` the day itself, with `%Y.%m` the month's last day. Indices the pattern does not
name, or whose period cannot be read, are never touched. A dry run (the default) says what
would go; `--apply` deletes, by name, since Elasticsearch refuses wildcard deletes.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from elasticsearch import Elasticsearch, NotFoundError

from pipeline.documents import PLACEHOLDER

DIRECTIVES = {"%Y": r"\d{4}", "%m": r"\d{2}", "%d": r"\d{2}"}


@dataclass(frozen=True)
class Old:
    index: str
    ended: date
    docs: str
    size: str


class Periods:
    """Reads the period of an index name made by one `--index` pattern."""

    def __init__(self, pattern: str) -> None:
        parts: list[str] = []
        self.form: str | None = None
        end = 0
        for match in PLACEHOLDER.finditer(pattern):
            parts.append(re.escape(pattern[end : match.start()]))
            field, form = match.group(1), match.group(2)
            if field == "@timestamp" and form is not None and self.form is None:
                self.form = form
                parts.append(f"(?P<period>{self.period_regex(form)})")
            else:
                parts.append(".+")
            end = match.end()
        parts.append(re.escape(pattern[end:]))
        self.name = re.compile("".join(parts))
        self.wildcard = PLACEHOLDER.sub("*", pattern)

    @staticmethod
    def period_regex(form: str) -> str:
        pieces = re.split(r"(%[Ymd])", form)
        return "".join(DIRECTIVES.get(piece, re.escape(piece)) for piece in pieces)

    def ended(self, index: str) -> date | None:
        """The last day an index of this name holds, or None when the name says none."""
        found = self.name.fullmatch(index)
        if found is None or self.form is None:
            return None
        try:
            start = datetime.strptime(found.group("period"), self.form).date()
        except ValueError:
            return None
        if "%d" in self.form:
            return start
        if "%m" in self.form:
            return start.replace(day=calendar.monthrange(start.year, start.month)[1])
        return start.replace(month=12, day=31)


def old_indices(es: Elasticsearch, pattern: str, keep_days: int, today: date) -> list[Old]:
    periods = Periods(pattern)
    if periods.form is None:
        raise ValueError(
            f"the index pattern {pattern!r} has no {{@timestamp:FORMAT}} part, so its indices "
            "have no age; give such indices an ILM or ISM policy instead"
        )
    cutoff = today - timedelta(days=keep_days)
    try:
        rows = es.cat.indices(
            index=periods.wildcard, format="json", h="index,docs.count,store.size",
            expand_wildcards="open,closed",
        ).body  # fmt: skip
    except NotFoundError:
        return []
    old = []
    for row in rows:
        ended = periods.ended(row["index"])
        if ended is not None and ended < cutoff:
            old.append(
                Old(row["index"], ended, row.get("docs.count") or "?", row.get("store.size") or "?")
            )
    return sorted(old, key=lambda o: (o.ended, o.index))


def retain(
    es: Elasticsearch,
    pattern: str,
    keep_days: int,
    apply: bool,
    say: Callable[[str], None] = print,
    today: date | None = None,
) -> list[str]:
    """Deletes (with apply) or lists the old indices; returns their names."""
    today = today or datetime.now(UTC).date()
    old = old_indices(es, pattern, keep_days, today)
    cutoff = today - timedelta(days=keep_days)
    verb = "deleted" if apply else "would delete"
    for entry in old:
        if apply:
            es.indices.delete(index=entry.index, ignore_unavailable=True)
        say(f"{verb} {entry.index} (up to {entry.ended}, {entry.docs} documents, {entry.size})")
    summary = f"{len(old)} indices of {pattern} ended before {cutoff}"
    say(f"{summary}: deleted" if apply else f"{summary}: a dry run; --apply deletes them")
    return [entry.index for entry in old]
