"""dashboards/logferry.ndjson: Kibana 8 saved objects that parse, reference only each other,
and use only fields that the index template maps and that indexed documents carry.

The documents are made here the way production makes them, without servers: the collector
(`python -m collector --once --sink file:...`) reads Docker json-file logs written in a
temporary folder, and each record goes through the pipeline's `document()`, which gives the
exact source the bulk request would index.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.backend import ELASTICSEARCH
from pipeline.documents import IndexName, document
from pipeline.templates import INDEX_PATTERN, mappings
from tests.unit.logfiles import append, docker_container, docker_line

REPO = Path(__file__).resolve().parents[2]
NDJSON = REPO / "dashboards" / "logferry.ndjson"
COUNT = "___records___"
"""Lens's pseudo-field for a count of documents."""
KQL_FIELD = re.compile(r"(?<![\w.@\"])([A-Za-z@_][\w.@-]*)\s*:")
FROM_THE_API = ("kubernetes.labels.", "kubernetes.annotations.", "kubernetes.namespace_labels.")
"""Filled from the Kubernetes API, which the document made here has no access to."""


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    lines = NDJSON.read_text(encoding="utf-8").splitlines()
    assert lines
    assert all(line.strip() for line in lines), "no blank lines"
    return [json.loads(line) for line in lines]


def by_type(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["type"] == kind]


def embedded(attributes: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Attributes that hold JSON in a string (panelsJSON, searchSourceJSON...), decoded."""
    for key, value in attributes.items():
        if isinstance(value, dict):
            yield from embedded(value)
        elif isinstance(value, str) and key.endswith("JSON"):
            yield key, json.loads(value)


def test_every_object_is_well_formed(objects: list[dict[str, Any]]) -> None:
    ids = [(o["type"], o["id"]) for o in objects]
    assert len(ids) == len(set(ids))
    for o in objects:
        assert set(o) >= {"id", "type", "attributes", "references"}, o["id"]
        assert o["attributes"]["title"], o["id"]
        assert o["coreMigrationVersion"].startswith("8."), o["id"]
        assert o["typeMigrationVersion"].startswith("8."), o["id"]
        list(embedded(o["attributes"]))  # every *JSON string attribute decodes


def test_the_expected_objects(objects: list[dict[str, Any]]) -> None:
    (view,) = by_type(objects, "index-pattern")
    assert view["attributes"]["title"] == INDEX_PATTERN
    assert view["attributes"]["timeFieldName"] == "@timestamp"
    searches = {o["attributes"]["title"]: o for o in by_type(objects, "search")}
    assert set(searches) == {"Container logs", "Errors"}
    assert searches["Container logs"]["attributes"]["columns"] == [
        "kubernetes.namespace",
        "kubernetes.pod.name",
        "kubernetes.container.name",
        "stream",
        "message",
    ]
    errors = search_source(searches["Errors"])["query"]
    # By the level the record states: stderr alone does not mean error.
    assert errors == {"language": "kuery", "query": "log.level : (error or fatal)"}
    lenses = {o["id"]: o["attributes"]["visualizationType"] for o in by_type(objects, "lens")}
    assert lenses == {
        "logferry-volume-by-namespace": "lnsXY",
        "logferry-levels": "lnsXY",
        "logferry-top-pods": "lnsXY",
        "logferry-stderr-share": "lnsPie",
    }
    (dashboard,) = by_type(objects, "dashboard")
    shown = {r["id"] for r in dashboard["references"]}
    assert shown == {o["id"] for o in objects if o["type"] in ("lens", "search")}


def test_the_level_breakdown_counts_records_per_level_over_time(
    objects: list[dict[str, Any]],
) -> None:
    (levels,) = (o for o in by_type(objects, "lens") if o["id"] == "logferry-levels")
    state = levels["attributes"]["state"]
    (layer,) = state["datasourceStates"]["formBased"]["layers"].values()
    (vis,) = state["visualization"]["layers"]
    columns = layer["columns"]
    assert columns[vis["xAccessor"]]["operationType"] == "date_histogram"
    split = columns[vis["splitAccessor"]]
    assert (split["sourceField"], split["operationType"]) == ("log.level", "terms")
    # Every level shows, and so does the share of records that state none.
    assert split["params"]["size"] >= 6
    assert split["params"]["missingBucket"] is True
    assert [columns[a]["operationType"] for a in vis["accessors"]] == ["count"]


def search_source(o: dict[str, Any]) -> dict[str, Any]:
    return json.loads(o["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])


def test_every_reference_resolves_inside_the_file(objects: list[dict[str, Any]]) -> None:
    present = {(o["type"], o["id"]) for o in objects}
    for o in objects:
        names = [r["name"] for r in o["references"]]
        assert len(names) == len(set(names)), o["id"]
        for ref in o["references"]:
            assert (ref["type"], ref["id"]) in present, f"{o['id']} -> {ref}"


def test_reference_names_are_the_ones_kibana_looks_up(objects: list[dict[str, Any]]) -> None:
    for o in objects:
        names = {r["name"] for r in o["references"]}
        if o["type"] == "search":
            assert search_source(o)["indexRefName"] in names
        elif o["type"] == "lens":
            layers = o["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]
            assert {f"indexpattern-datasource-layer-{layer}" for layer in layers} == names
        elif o["type"] == "dashboard":
            panels = json.loads(o["attributes"]["panelsJSON"])
            wanted = {f"{p['panelIndex']}:{p['panelRefName']}" for p in panels}
            assert wanted == names
            by_name = {r["name"]: r["type"] for r in o["references"]}
            for p in panels:
                assert by_name[f"{p['panelIndex']}:{p['panelRefName']}"] == p["type"]
                assert p["gridData"]["i"] == p["panelIndex"]
                assert p["gridData"]["x"] + p["gridData"]["w"] <= 48


def test_lens_layers_are_consistent(objects: list[dict[str, Any]]) -> None:
    for o in by_type(objects, "lens"):
        state = o["attributes"]["state"]
        (layer_id, layer) = next(iter(state["datasourceStates"]["formBased"]["layers"].items()))
        columns = layer["columns"]
        assert sorted(layer["columnOrder"]) == sorted(columns), o["id"]
        for column in columns.values():
            order = column.get("params", {}).get("orderBy", {})
            if order.get("type") == "column":
                assert order["columnId"] in columns, o["id"]
        (vis_layer,) = state["visualization"]["layers"]
        assert vis_layer["layerId"] == layer_id
        used = [vis_layer.get(k) for k in ("xAccessor", "splitAccessor")]
        used += vis_layer.get("accessors", []) + vis_layer.get("metrics", [])
        used += vis_layer.get("primaryGroups", [])
        assert {u for u in used if u} == set(columns), o["id"]


# -- the fields --------------------------------------------------------------------------------


def fields_used(objects: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Every field each object names: columns, sorts, Lens source fields, KQL queries."""
    used: dict[str, set[str]] = {}
    for o in objects:
        names: set[str] = set()
        a = o["attributes"]
        if o["type"] == "index-pattern":
            names.add(a["timeFieldName"])
        if o["type"] == "search":
            names |= set(a["columns"]) | {s[0] for s in a["sort"]}
        if o["type"] == "lens":
            state = a["state"]
            for layer in state["datasourceStates"]["formBased"]["layers"].values():
                for column in layer["columns"].values():
                    names.add(column["sourceField"])
                    if column.get("filter"):
                        names |= kql_fields(column["filter"]["query"])
            names |= kql_fields(state["query"]["query"])
        for _key, value in embedded(a):
            if isinstance(value, dict) and isinstance(value.get("query"), dict):
                names |= kql_fields(value["query"]["query"])
        names.discard(COUNT)
        used[o["id"]] = names
    return used


def kql_fields(query: str) -> set[str]:
    return set(KQL_FIELD.findall(query))


def test_kql_field_extraction() -> None:
    query = 'stream : "stderr" or message:(error or "a: b") and not kubernetes.pod.name : x*'
    assert kql_fields(query) == {"stream", "message", "kubernetes.pod.name"}


def mapped_fields(mapping: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for name, spec in mapping.get("properties", {}).items():
        path = prefix + name
        if "properties" in spec:
            yield from mapped_fields(spec, path + ".")
        elif spec.get("type", "object") != "object":
            yield path


def test_every_field_is_in_the_index_template(objects: list[dict[str, Any]]) -> None:
    mapped = mappings(ELASTICSEARCH)["template"]["mappings"]
    fields = set(mapped_fields(mapped))
    dynamic = tuple(
        next(iter(t.values()))["path_match"].rstrip("*")
        for t in mapped["dynamic_templates"]
        if "path_match" in next(iter(t.values()))
    )
    for object_id, names in fields_used(objects).items():
        for name in names:
            assert name in fields or name.startswith(dynamic), f"{object_id}: {name} unmapped"


def test_aggregated_fields_are_keywords_or_dates(objects: list[dict[str, Any]]) -> None:
    """Terms and histograms on a `text` field fail in Elasticsearch; `message` is text."""
    types = dict(mapped_types(mappings(ELASTICSEARCH)["template"]["mappings"]))
    for o in by_type(objects, "lens"):
        for layer in o["attributes"]["state"]["datasourceStates"]["formBased"]["layers"].values():
            for column in layer["columns"].values():
                if column["sourceField"] == COUNT:
                    continue
                assert types[column["sourceField"]] in ("keyword", "date", "date_nanos"), o["id"]


def mapped_types(mapping: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for name, spec in mapping.get("properties", {}).items():
        if "properties" in spec:
            yield from mapped_types(spec, prefix + name + ".")
        else:
            yield prefix + name, spec.get("type", "object")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Documents as the pipeline would index them, from logs the collector read."""
    root = tmp_path_factory.mktemp("node")
    docker, logs, state = root / "docker", root / "log", root / "state"
    logs.mkdir()
    out = root / "records.jsonl"
    web = docker_container(docker, "a" * 64, pod="web-7d9f8b6c4-x2klp", ns="shop")
    append(
        web,
        docker_line("INFO GET /cart 200"),
        docker_line("ERROR payment failed: timeout", "stderr"),
    )
    roots = ["--docker-root", str(docker), "--log-root", str(logs), "--state-dir", str(state)]
    quiet = ["--metrics-port", "0", "--node-name", "node-1"]
    done = subprocess.run(
        [sys.executable, "-m", "collector", "--once", "--sink", f"file:{out}", *roots, *quiet],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "KUBECONFIG": str(root / "none")},
    )
    assert done.returncode == 0, done.stderr
    index = IndexName("logferry-{kubernetes.namespace}-{@timestamp:%Y.%m.%d}")
    docs = []
    for line in out.read_bytes().splitlines():
        doc = document(line, index, "2026-11-27T02:30:00.000000000Z")
        assert doc.index.startswith("logferry-shop-")
        docs.append(json.loads(doc.lines.split(b"\n")[1]))
    assert len(docs) == 2
    return docs


def flatten(doc: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in doc.items():
        if isinstance(value, dict):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield prefix + key


def test_every_field_is_in_indexed_documents(
    objects: list[dict[str, Any]], indexed: list[dict[str, Any]]
) -> None:
    present = set.intersection(*(set(flatten(d)) for d in indexed))
    for object_id, names in fields_used(objects).items():
        for name in names:
            if not name.startswith(FROM_THE_API):
                assert name in present, f"{object_id}: no {name} in {sorted(present)}"
    streams = {d["stream"] for d in indexed}
    assert streams == {"stdout", "stderr"}, "the stderr share has both to show"
