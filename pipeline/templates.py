"""The index template (and its component templates) that fits the record contract.

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

INDEX_PATTERN = "logferry-*"
TEMPLATE = "logferry"

KEYWORD = {"type": "keyword", "ignore_above": 1024}
FREE_FORM = {"type": "object", "subobjects": False}

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
                {"labels": {"path_match": "kubernetes.labels.*", "mapping": KEYWORD}},
                {"annotations": {"path_match": "kubernetes.annotations.*", "mapping": KEYWORD}},
                {
                    "namespace_labels": {
                        "path_match": "kubernetes.namespace_labels.*",
                        "mapping": KEYWORD,
                    }
                },
                {"strings": {"match_mapping_type": "string", "mapping": KEYWORD}},
            ],
            "properties": {
                "@timestamp": {"type": "date_nanos"},
                "message": {"type": "text"},
                "stream": {"type": "keyword"},
                "tags": {"type": "keyword"},
                "event": {
                    "properties": {
                        "id": {"type": "keyword"},
                        "ingested": {"type": "date_nanos"},
                        # A record's own @timestamp when it was not a date (any JSON value,
                        # as text): @timestamp then holds the Kafka record's time.
                        "original_timestamp": KEYWORD,
                    }
                },
                "log": {
                    "properties": {
                        "file": {"properties": {"path": KEYWORD}},
                        "offset": {"type": "long"},
                    }
                },
                "container": {
                    "properties": {
                        "id": {"type": "keyword"},
                        "name": {"type": "keyword"},
                        "runtime": {"type": "keyword"},
                        "image": {"properties": {"name": {"type": "keyword"}}},
                    }
                },
                "kubernetes": {
                    "properties": {
                        "namespace": {"type": "keyword"},
                        "pod": {
                            "properties": {
                                "name": {"type": "keyword"},
                                "uid": {"type": "keyword"},
                                "ip": {"type": "keyword"},
                            }
                        },
                        "container": {"properties": {"name": {"type": "keyword"}}},
                        "node": {"properties": {"name": {"type": "keyword"}}},
                        "deployment": {"properties": {"name": {"type": "keyword"}}},
                        "statefulset": {"properties": {"name": {"type": "keyword"}}},
                        "daemonset": {"properties": {"name": {"type": "keyword"}}},
                        "job": {"properties": {"name": {"type": "keyword"}}},
                        "cronjob": {"properties": {"name": {"type": "keyword"}}},
                        "labels": FREE_FORM,
                        "annotations": FREE_FORM,
                        "namespace_labels": FREE_FORM,
                    }
                },
                "host": {"properties": {"name": {"type": "keyword"}}},
                # Fields of forwarded events: any names, any types; flattened indexes them all
                # as keywords, so two apps sending one name with two types cannot conflict.
                "fluent": {
                    "properties": {
                        "tag": {"type": "keyword"},
                        "record": {"type": "flattened", "ignore_above": 1024},
                    }
                },
                "input": {"properties": {"type": {"type": "keyword"}}},
            },
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
