"""The index template (and its component templates) that fits the record contract.

The fields' mappings come from the record's one declaration, logferry/record.py.

Label, annotation and namespace-label keys keep their spelling (`app`, and
`app.kubernetes.io/name` beside it): on Elasticsearch those three objects are mapped with
`subobjects: false`, so a dotted key is one keyword field and never an object that would
collide with a plain `app`. Dynamic mapping elsewhere is bounded by a field limit that
ignores, rather than rejects, what is beyond it.

OpenSearch has neither `subobjects: false`, nor `flattened`, nor a field limit that ignores:
its variant maps the label objects and the free-form fields as `flat_object` (keys kept as
written, every leaf searchable as a keyword), and a document beyond the field limit is
refused, so it goes to the dead-letter topic rather than being indexed in part.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from logferry.record import FIELDS, FREE_FORM, KEYWORD, LABEL_OBJECTS, Field, properties
from pipeline.backend import OPENSEARCH

INDEX_PATTERN = "logferry-*"
TEMPLATE = "logferry"


@dataclass(frozen=True)
class IndexSettings:
    """What `pipeline setup --shards --replicas --refresh-interval` chose for new indices."""

    shards: int = 1
    replicas: int = 1
    refresh_interval: str = "1s"


DEFAULT_SETTINGS = IndexSettings()
SINGLE_NODE = IndexSettings(replicas=0)
"""For a one-node cluster (tests, `make demo`): a replica could never be placed."""


def settings(backend: str, chosen: IndexSettings) -> dict[str, Any]:
    total_fields: dict[str, Any] = {"limit": 2000}
    if backend != OPENSEARCH:
        total_fields["ignore_dynamic_beyond_limit"] = True
    return {
        "template": {
            "settings": {
                "index": {
                    "number_of_shards": chosen.shards,
                    "number_of_replicas": chosen.replicas,
                    "refresh_interval": chosen.refresh_interval,
                    "mapping": {"total_fields": total_fields, "depth": {"limit": 10}},
                }
            }
        }
    }


def for_opensearch(field: Field) -> Field:
    """The field as OpenSearch can map it: free-form objects become `flat_object`."""
    if field.mapping is FREE_FORM or field.mapping.get("type") == "flattened":
        return Field(field.name, {"type": "flat_object"}, field.meaning, field.source)
    return field


def mappings(backend: str) -> dict[str, Any]:
    fields = FIELDS
    free_form = LABEL_OBJECTS
    if backend == OPENSEARCH:
        fields = tuple(for_opensearch(field) for field in FIELDS)
        # A flat_object's keys are not mapped one by one: no dynamic template reaches them.
        free_form = ()
    return {
        "template": {
            "mappings": {
                "dynamic": True,
                "date_detection": False,
                "dynamic_templates": [
                    *(
                        {name.rsplit(".", 1)[1]: {"path_match": f"{name}.*", "mapping": KEYWORD}}
                        for name in free_form
                    ),
                    {"strings": {"match_mapping_type": "string", "mapping": KEYWORD}},
                ],
                "properties": properties(fields),
            }
        }
    }


def components(backend: str, chosen: IndexSettings) -> dict[str, dict[str, Any]]:
    return {"logferry-settings": settings(backend, chosen), "logferry-mappings": mappings(backend)}


COMPONENTS = ("logferry-settings", "logferry-mappings")

INDEX_TEMPLATE: dict[str, Any] = {
    "index_patterns": [INDEX_PATTERN],
    "composed_of": list(COMPONENTS),
    # Above the built-in templates of a full Elasticsearch, which match broad patterns.
    "priority": 200,
}


DATA_STREAM_TEMPLATE = "logferry-ds"
DATA_STREAM_INDEX_TEMPLATE: dict[str, Any] = {
    # `--index logferry-ds-{kubernetes.namespace}` writes to data streams (clusters that
    # have them); above the plain template, whose pattern also matches these names.
    "index_patterns": ["logferry-ds-*"],
    "data_stream": {},
    "composed_of": list(COMPONENTS),
    "priority": 201,
}

INDEX_TEMPLATES = {TEMPLATE: INDEX_TEMPLATE, DATA_STREAM_TEMPLATE: DATA_STREAM_INDEX_TEMPLATE}


def index_template_fingerprint(name: str, backend: str) -> str:
    """What the index template and the mappings it composes make of our documents: the
    shards, replicas and refresh interval an operator chose are left out, so `run` need
    not know them to tell whether `setup` installed this version's templates."""
    shape = settings(backend, IndexSettings(0, 0, ""))
    return fingerprint(
        {"index": INDEX_TEMPLATES[name], "mappings": mappings(backend), "shape": shape}
    )


def fingerprint(body: dict[str, Any]) -> str:
    """Kept in `_meta`: Elasticsearch rewrites bodies, so equality is judged by this."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
