"""The record: the one JSON object per Kafka message that the collector writes and the
pipeline indexes. This module is its only declaration.

Every field a record may carry is listed once in FIELDS, with its Elasticsearch mapping and
its meaning. From it come the index template's mappings (pipeline/templates.py) and the
contract document docs/record.md (`python -m logferry.record > docs/record.md`; a test
checks that the file is what this module renders). Objects whose keys are free (labels,
annotations, forwarded fields) are declared as one field with a free-form mapping.

Records are nested JSON objects with ECS names, not dotted keys.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

KEYWORD: dict[str, Any] = {"type": "keyword", "ignore_above": 1024}
FREE_FORM: dict[str, Any] = {"type": "object", "subobjects": False}
"""Keys keep their spelling: `app.kubernetes.io/name` is one keyword field beside `app`."""


@dataclass(frozen=True)
class Field:
    name: str
    """Dotted path in the record."""
    mapping: dict[str, Any]
    """How the index template maps it."""
    meaning: str
    source: str
    """Where its value comes from."""


def keyword(name: str, meaning: str, source: str) -> Field:
    return Field(name, {"type": "keyword"}, meaning, source)


FIELDS: tuple[Field, ...] = (
    Field(
        "@timestamp",
        {"type": "date_nanos"},
        "the runtime's timestamp of the record's first line, RFC 3339, UTC, nanoseconds kept",
        "runtime",
    ),
    Field(
        "message",
        {"type": "text"},
        "the text, trailing newline removed; joined parts and multi-line records concatenated",
        "runtime",
    ),
    keyword("stream", "`stdout` or `stderr`", "runtime"),
    keyword(
        "tags",
        "`parse_error`, `truncated`, `multiline`, `metadata_missing`, `invalid_utf8`, "
        "`redacted`, `timestamp_invalid`",
        "collector",
    ),
    keyword(
        "event.id",
        "stable id: the same bytes of the same file give the same id after any restart; the "
        "pipeline's document `_id`",
        "collector",
    ),
    Field(
        "event.ingested",
        {"type": "date_nanos"},
        "when the pipeline indexed the record",
        "pipeline",
    ),
    Field(
        "event.original_timestamp",
        KEYWORD,
        "a record's own `@timestamp` when it was missing or not a date (as text); "
        "`@timestamp` then holds the Kafka record's time and `tags` has `timestamp_invalid`",
        "pipeline",
    ),
    Field(
        "event.original",
        {"type": "keyword", "index": False, "doc_values": False},
        "the record's text when `message` was taken from a parsed field (stored, not indexed)",
        "collector",
    ),
    keyword(
        "log.level",
        "trace, debug, info, warn, error or fatal, when the record says so (a parsed field, a "
        "leading level word, a klog prefix)",
        "collector",
    ),
    Field(
        "json",
        {"type": "flattened", "ignore_above": 8191},
        "the fields of a JSON or logfmt application log, nested as written; every leaf indexed "
        "as a keyword, so two apps giving one key two types never conflict",
        "collector",
    ),
    Field("log.file.path", KEYWORD, "the file the record's first line was read from", "path"),
    Field("log.offset", {"type": "long"}, "byte offset of the record's first line", "collector"),
    keyword("container.id", "the container's id", "path, config.v2.json"),
    keyword("container.name", "the container's name", "config.v2.json, API"),
    keyword("container.runtime", "`docker`, `containerd`, `cri-o`", "path"),
    keyword("container.image.name", "the image the container runs", "config.v2.json, API"),
    keyword("kubernetes.namespace", "the pod's namespace", "path, API"),
    keyword("kubernetes.pod.name", "the pod's name", "path, API"),
    keyword("kubernetes.pod.uid", "the pod's uid", "path, API"),
    keyword("kubernetes.pod.ip", "the pod's IP address", "API"),
    keyword("kubernetes.container.name", "the container's name in the pod spec", "path, API"),
    keyword("kubernetes.node.name", "the node the pod runs on", "API, NODE_NAME"),
    keyword("kubernetes.deployment.name", "owner workload: Deployment", "API (owner refs)"),
    keyword("kubernetes.statefulset.name", "owner workload: StatefulSet", "API (owner refs)"),
    keyword("kubernetes.daemonset.name", "owner workload: DaemonSet", "API (owner refs)"),
    keyword("kubernetes.job.name", "owner workload: Job", "API (owner refs)"),
    keyword("kubernetes.cronjob.name", "owner workload: CronJob", "API (owner refs)"),
    Field("kubernetes.labels", FREE_FORM, "the pod's labels, keys as written", "API"),
    Field("kubernetes.annotations", FREE_FORM, "the pod's annotations, keys as written", "API"),
    Field(
        "kubernetes.namespace_labels", FREE_FORM, "the namespace's labels, keys as written", "API"
    ),
    keyword("host.name", "the node", "NODE_NAME"),
    keyword("input.type", "`forward` for records from the Fluentd forward listener", "collector"),
    keyword("fluent.tag", "the forward protocol's tag", "forward client"),
    Field(
        "fluent.record",
        {"type": "flattened", "ignore_above": 1024},
        "a forwarded event's other fields, any names and types (indexed as keywords)",
        "forward client",
    ),
)

LABEL_OBJECTS = tuple(f.name for f in FIELDS if f.mapping is FREE_FORM)


def properties(fields: tuple[Field, ...] = FIELDS) -> dict[str, Any]:
    """The fields as an Elasticsearch `properties` mapping, nested by their dotted names."""
    out: dict[str, Any] = {}
    for field in fields:
        node = out
        *parents, leaf = field.name.split(".")
        for part in parents:
            node = node.setdefault(part, {"properties": {}})["properties"]
        node[leaf] = dict(field.mapping)
    return out


def markdown(fields: tuple[Field, ...] = FIELDS) -> str:
    """The contract as a document: what docs/record.md holds."""
    lines = [
        "# The record",
        "",
        "One UTF-8 JSON object per Kafka message, nested objects (not dotted keys), ECS names.",
        "The collector writes it; the pipeline indexes it with `_id` = `event.id`. Generated",
        "from `logferry/record.py` (`python -m logferry.record > docs/record.md`); a test",
        "checks that the two agree.",
        "",
        "| field | mapping | from | meaning |",
        "|---|---|---|---|",
    ]
    for field in fields:
        kind = field.mapping["type"]
        if field.mapping is FREE_FORM:
            kind = "object, keys kept as written"
        lines.append(f"| `{field.name}` | {kind} | {field.source} | {field.meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown())
