"""The index template (and its component templates) that fits the record contract.

The fields' mappings come from the record's one declaration, logferry/record.py.

Label, annotation and namespace-label keys keep their spelling (`app`, and
`app.kubernetes.io/name` beside it): those three objects are mapped with
`subobjects: false`, so a dotted key is one keyword field and never an object that would
collide with a plain `app`. Dynamic mapping elsewhere is bounded by a field limit that
ignores, rather than rejects, what is beyond it.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from logferry.record import KEYWORD, LABEL_OBJECTS, properties

INDEX_PATTERN = "logferry-*"
TEMPLATE = "logferry"


SETTINGS: dict[str, Any] = {
    "template": {
        "settings": {
            "index": {
                "number_of_shards": 1,
                "number_of_replicas": 0,
                "refresh_interval": "1s",
                "mapping": {
                    "total_fields": {"limit": 2000, "ignore_dynamic_beyond_limit": True},
                    "depth": {"limit": 10},
                },
            }
        }
    }
}

MAPPINGS: dict[str, Any] = {
    "template": {
        "mappings": {
            "dynamic": True,
            "date_detection": False,
            "dynamic_templates": [
                *(
                    {name.rsplit(".", 1)[1]: {"path_match": f"{name}.*", "mapping": KEYWORD}}
                    for name in LABEL_OBJECTS
                ),
                {"strings": {"match_mapping_type": "string", "mapping": KEYWORD}},
            ],
            "properties": properties(),
        }
    }
}


COMPONENTS = {"logferry-settings": SETTINGS, "logferry-mappings": MAPPINGS}

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


def fingerprint(body: dict[str, Any]) -> str:
    """Kept in `_meta`: Elasticsearch rewrites bodies, so equality is judged by this."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
