"""What differs between the backends before anything is sent: the OpenSearch templates and
settings hold nothing OpenSearch refuses, and the same fields are mapped on both."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from logferry.settings import SettingError
from pipeline.backend import ELASTICSEARCH, OPENSEARCH, plain
from pipeline.config import parse
from pipeline.templates import IndexSettings, components, index_template_fingerprint


def leaves(tree: Any, path: str = "") -> dict[str, Any]:
    if isinstance(tree, dict) and "type" in tree and not isinstance(tree["type"], dict):
        return {path: tree["type"]}
    out: dict[str, Any] = {}
    if isinstance(tree, dict):
        for key, value in tree.get("properties", {}).items():
            out.update(leaves(value, f"{path}.{key}" if path else key))
    return out


def test_the_opensearch_templates_hold_nothing_opensearch_refuses() -> None:
    text = orjson.dumps(components(OPENSEARCH, IndexSettings())).decode()
    for refused in ("subobjects", "flattened", "ignore_dynamic_beyond_limit"):
        assert refused not in text


def test_both_backends_map_the_same_fields_free_form_ones_as_flat_object() -> None:
    def fields(backend: str) -> dict[str, Any]:
        template = components(backend, IndexSettings())["logferry-mappings"]["template"]
        return leaves(template["mappings"])

    elastic, open_ = fields(ELASTICSEARCH), fields(OPENSEARCH)
    assert elastic.keys() == open_.keys()
    differ = {
        name: (elastic[name], open_[name]) for name in elastic if elastic[name] != open_[name]
    }
    assert differ == {
        "json": ("flattened", "flat_object"),
        "fluent.record": ("flattened", "flat_object"),
        "kubernetes.labels": ("object", "flat_object"),
        "kubernetes.annotations": ("object", "flat_object"),
        "kubernetes.namespace_labels": ("object", "flat_object"),
    }


def test_the_chosen_shards_and_replicas_do_not_make_run_call_the_templates_outdated() -> None:
    marks = {index_template_fingerprint("logferry", b) for b in (ELASTICSEARCH, OPENSEARCH)}
    assert len(marks) == 2
    chosen = components(ELASTICSEARCH, IndexSettings(3, 2, "30s"))["logferry-settings"]
    index = chosen["template"]["settings"]["index"]
    assert (index["number_of_shards"], index["number_of_replicas"]) == (3, 2)
    assert index["refresh_interval"] == "30s"


def test_opensearch_is_sent_the_plain_media_types() -> None:
    compat = {
        "Accept": "application/vnd.elasticsearch+json; compatible-with=8",
        "Content-Type": "application/vnd.elasticsearch+x-ndjson; compatible-with=8",
    }
    sent = plain(compat)
    assert (sent["accept"], sent["content-type"]) == ("application/json", "application/x-ndjson")


def test_setup_takes_index_settings_and_refuses_wrong_ones() -> None:
    chosen = ["--shards", "3", "--replicas", "2", "--refresh-interval", "30s"]
    config = parse(
        ["setup", "--elasticsearch-url", "http://es:9200", *chosen, "--backend", "opensearch"]
    )
    assert (config.shards, config.replicas, config.refresh_interval) == (3, 2, "30s")
    assert config.backend == "opensearch"
    defaults = parse(["setup", "--elasticsearch-url", "http://es:9200"])
    assert (defaults.shards, defaults.replicas, defaults.refresh_interval) == (1, 1, "1s")
    assert defaults.backend == "auto"
    for flag, value in (
        ("--shards", "0"),
        ("--replicas", "-1"),
        ("--refresh-interval", "30"),
        ("--backend", "solr"),
    ):
        with pytest.raises(SettingError):
            parse(["setup", "--elasticsearch-url", "http://es:9200", flag, value])
