"""What keeps the indexer from committing, said once per change: in the log and in /readyz.

A failure that repeats on every retry (Elasticsearch down, the dead-letter topic missing)
is logged when it starts, when it changes and when it ends, with how many times it was
seen, instead of once per retry; /readyz answers 503 with the same sentence in its body.
"""

from __future__ import annotations

import logging
import re

from logferry.probes import Health

log = logging.getLogger("pipeline")
ADDRESS = re.compile(r" (?:object )?at 0x[0-9a-f]+")
"""Python's `<... object at 0x7f...>`: differs on every retry, and says nothing."""


class Readiness(Health):
    """Health with the reasons it is not ready: one sentence per source of trouble."""

    def __init__(self, stall_after: float = 30.0) -> None:
        super().__init__(stall_after)
        self.problems: dict[str, str] = {}
        self.kinds: dict[str, str] = {}
        self.repeats: dict[str, int] = {}

    def problem(self, source: str, text: str, kind: str | None = None) -> None:
        """`source` fails with `text`: logged if its `kind` (by default the text) is new for
        the source, else counted. /readyz gives the latest text."""
        text = ADDRESS.sub("", text)
        kind = kind or text
        self.problems[source] = text
        if self.kinds.get(source) == kind:
            self.repeats[source] += 1
            return
        self.settled(source, "changed")
        self.kinds[source] = kind
        self.repeats[source] = 1
        log.warning("%s", text)

    def solved(self, source: str) -> None:
        if source in self.problems:
            self.settled(source, "over")
            del self.problems[source]
            del self.kinds[source]

    def stopped(self) -> None:
        """At shutdown: how often each trouble still there was seen."""
        for source in list(self.kinds):
            self.settled(source, "still there at stop")

    def settled(self, source: str, how: str) -> None:
        if source in self.kinds:
            log.info("%s: trouble %s, seen %d times", source, how, self.repeats[source])

    def reason(self) -> str | None:
        """Why /readyz fails, None when ready."""
        if not self.alive():
            return self.why_not_alive()
        # A copy in one step: the main loop may change the dict meanwhile.
        problems = list(self.problems.values())
        if problems:
            return "; ".join(problems)
        if not self.ready:
            return "starting"
        return None
