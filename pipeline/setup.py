"""`python -m pipeline setup`: install the templates (and dashboards), saying what changed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from elasticsearch import Elasticsearch, NotFoundError

from pipeline.backend import kind
from pipeline.templates import (
    DEFAULT_SETTINGS,
    INDEX_TEMPLATES,
    IndexSettings,
    components,
    fingerprint,
    index_template_fingerprint,
)

DASHBOARDS = Path(__file__).resolve().parent.parent / "dashboards" / "logferry.ndjson"


def installed_fingerprint(get: Callable[[], Any], kind: str) -> str | None:
    try:
        reply = get()
    except NotFoundError:
        return None
    items = reply.body.get(kind) or []
    meta = items[0].get(kind.rstrip("s"), {}).get("_meta", {}) if items else {}
    return meta.get("logferry_fingerprint")


def template_states(es: Elasticsearch) -> tuple[list[str], list[str]]:
    """logferry's index templates missing from the server, and those installed by
    another version of `setup` (or for another kind of server)."""
    backend = kind(es)
    missing, outdated = [], []
    for name in INDEX_TEMPLATES:
        have = installed_fingerprint(
            lambda name=name: es.indices.get_index_template(name=name), "index_templates"
        )
        if have is None:
            missing.append(name)
        elif have != index_template_fingerprint(name, backend):
            outdated.append(name)
    return missing, outdated


def install_templates(
    es: Elasticsearch,
    chosen: IndexSettings = DEFAULT_SETTINGS,
    say: Callable[[str], None] = print,
) -> list[str]:
    """Put what differs from what is installed, in the variant the server's kind takes;
    returns the names changed. Idempotent."""
    backend = kind(es)
    changed = []
    for name, body in components(backend, chosen).items():
        mark = fingerprint(body)
        have = installed_fingerprint(
            lambda name=name: es.cluster.get_component_template(name=name), "component_templates"
        )
        if have == mark:
            say(f"component template {name}: unchanged")
            continue
        es.cluster.put_component_template(
            name=name, template=body["template"], meta={"logferry_fingerprint": mark}
        )
        say(f"component template {name}: {'created' if have is None else 'updated'}")
        changed.append(name)
    for name, body in INDEX_TEMPLATES.items():
        mark = index_template_fingerprint(name, backend)
        have = installed_fingerprint(
            lambda name=name: es.indices.get_index_template(name=name), "index_templates"
        )
        if have == mark:
            say(f"index template {name}: unchanged")
            continue
        es.indices.put_index_template(name=name, **body, meta={"logferry_fingerprint": mark})
        say(f"index template {name}: {'created' if have is None else 'updated'}")
        changed.append(name)
    return changed


def install_dashboards(kibana_url: str, say: Callable[[str], None] = print) -> int:
    """Imports the saved objects that the product at the URL can hold; returns how many."""
    from pipeline import kibana

    product = kibana.probe(kibana_url)
    ndjson = DASHBOARDS.read_bytes()
    if product.name == "opensearch-dashboards":
        ndjson = kibana.for_opensearch_dashboards(ndjson)
    count = kibana.import_saved_objects(kibana_url, ndjson, xsrf=kibana.XSRF[product.name])
    say(f"{product.name}: {count} saved objects imported from {DASHBOARDS.name}")
    if product.name == "kibana" and product.version >= kibana.LOG_SOURCES_SINCE:
        pattern = data_view_pattern(ndjson)
        added = kibana.add_log_source(kibana_url, pattern)
        say(f"kibana: {pattern} {'added to' if added else 'already in'} the log sources")
    return count


def data_view_pattern(ndjson: bytes) -> str:
    for line in ndjson.splitlines():
        if line.strip():
            item = json.loads(line)
            if item.get("type") == "index-pattern":
                return str(item["attributes"]["title"])
    raise ValueError(f"{DASHBOARDS.name} holds no data view")
