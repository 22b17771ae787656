"""Which Kafka topic a container's records go to: `--topic` as a template of record fields.

`logs.{kubernetes.namespace}` sends each namespace's records to a topic of its own. A field
is a flat contract key (`kubernetes.namespace`, `kubernetes.pod.name`, `host.name`) or a key
inside one of the record's maps (`kubernetes.labels.app.kubernetes.io/name`). A container's
fields come from its path and the pod metadata, the same for all of its lines, so the topic
is worked out once per container (again only when its metadata changes), not per line.

When a field is missing, or the result is not a legal topic name (Kafka allows
[a-zA-Z0-9._-], at most 249 characters, not `.` or `..`), the records go to the fallback
topic instead, counted per reason in logferry_collector_topic_fallback_records. Values are
not sanitised: mending `team/a` and `team_a` into one name would merge two sources into one
topic nobody configured, and a namespace (a DNS label) is always legal, so an illegal result
means a template over free text, which the metric and a warning per container bring to light.
"""

from __future__ import annotations

import logging
import re
import weakref
from collections.abc import Mapping
from typing import Any, Protocol

from collector.metrics import METRICS
from logferry.topics import legal

log = logging.getLogger("collector.route")

FIELD = re.compile(r"\{([^{}]*)\}")
MISSING = "missing"
ILLEGAL = "illegal"


def topic_template(text: str) -> str:
    """The settings' check of `--topic`: a topic name, with {field} in place of any part."""
    fields = FIELD.findall(text)
    if any(not f.strip() for f in fields):
        raise ValueError(f"has an empty {{}}, got {text!r}")
    fixed = FIELD.sub("x", text)
    if "{" in fixed or "}" in fixed:
        raise ValueError(f"has an unmatched brace, got {text!r}")
    if not legal(fixed):
        raise ValueError(
            "must be a Kafka topic name ([a-zA-Z0-9._-], at most 249 characters) with "
            f"{{field}} in place of any part, got {text!r}"
        )
    return text


def field_value(fields: Mapping[str, Any], name: str) -> str | None:
    """A contract key's value, or a key's inside one of the record's maps (labels...)."""
    value = fields.get(name)
    if value is None:
        # `kubernetes.labels.app.kubernetes.io/name`: the map is the longest prefix that is
        # one; label keys keep their dots, so the rest is one key.
        at = len(name)
        while value is None and (at := name.rfind(".", 0, at)) > 0:
            inner = fields.get(name[:at])
            if isinstance(inner, Mapping):
                value = inner.get(name[at + 1 :])
    if value is None or isinstance(value, Mapping | list | tuple):
        return None
    text = str(value)
    return text or None


class Grouped(Protocol):
    """A container's files as the agent holds them: its path's fields and the API's."""

    folder: str
    meta: dict[str, Any]

    @property
    def info(self) -> Any: ...


class Topics:
    """The template, its fallback, and the topic each container's records go to."""

    def __init__(self, template: str, fallback: str, node_name: str = "") -> None:
        self.template = template
        self.fallback = fallback
        self.node_name = node_name
        self.parts = FIELD.split(template)
        """Literal text at even places, field names at odd ones."""
        self.fixed = template if len(self.parts) == 1 else None
        self.cache: weakref.WeakKeyDictionary[Any, tuple[Any, int, str, str | None]] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def default(self) -> str:
        """The topic of records without fields to route by."""
        return self.fixed if self.fixed is not None else self.fallback

    def render(self, fields: Mapping[str, Any]) -> tuple[str, str | None]:
        """The topic for these fields, and why it is the fallback (None when it is not)."""
        if self.fixed is not None:
            return self.fixed, None
        out = []
        for i, part in enumerate(self.parts):
            if i % 2 == 0:
                out.append(part)
                continue
            name = part.strip()
            value = field_value(fields, name)
            if value is None and name == "host.name" and self.node_name:
                value = self.node_name
            if value is None:
                return self.fallback, MISSING
            out.append(value)
        topic = "".join(out)
        if not legal(topic):
            return self.fallback, ILLEGAL
        return topic, None

    def of(self, group: Grouped, records: int) -> str:
        """The topic of a batch of `records` records of this container; fallbacks counted.

        Worked out again only when the container's pod metadata or path fields changed.
        """
        if self.fixed is not None:
            return self.fixed
        info = group.info
        known = self.cache.get(group)
        if known is None or known[0] is not info or known[1] != len(group.meta):
            fields = dict(group.meta)
            if info is not None:
                fields.update(info.fields)
            topic, why = self.render(fields)
            if why is not None:
                log.warning(
                    "records of %s go to the fallback topic %s: the topic %s is %s",
                    group.folder,
                    self.fallback,
                    self.template,
                    "missing a field" if why == MISSING else "not a legal topic name",
                )
            known = self.cache[group] = (info, len(group.meta), topic, why)
        if known[3] is not None and records:
            METRICS.topic_fallbacks.labels(known[3]).inc(records)
        return known[2]
