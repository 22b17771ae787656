"""Import saved objects (the dashboards) into Kibana or OpenSearch Dashboards.

Both answer HTTP 200 even when objects fail to import (`success: false`, with `errors`), so
the reply's `success`, `successCount` and `errors` are checked, not only the status. Which of
the two answers is read from `GET /api/status`: Kibana names itself in a `kbn-name` header,
OpenSearch Dashboards in `osd-name`, and each wants its own anti-CSRF header. OpenSearch
Dashboards has no Lens: it gets the data view and the saved searches only, with the
attributes both products share. Kibana 8.15 and later also get our index pattern in the
`observability:logSources` advanced setting, which Discover's log views read. Standard
library only.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

IMPORT_PATH = "/api/saved_objects/_import?overwrite=true"
SETTINGS_PATH = "/api/kibana/settings"
FILENAME = "logferry.ndjson"
LOG_SOURCES = "observability:logSources"
LOG_SOURCES_SINCE = (8, 15)
LOG_SOURCES_DEFAULT = ["logs-*-*", "logs-*", "filebeat-*"]
"""Kibana's default, replaced as a whole by the first user value: so it is kept in ours."""
XSRF = {"kibana": "kbn-xsrf", "opensearch-dashboards": "osd-xsrf"}
SHARED_ATTRIBUTES = {
    "index-pattern": ("title", "timeFieldName"),
    "search": ("title", "description", "columns", "sort", "kibanaSavedObjectMeta"),
}
"""What OpenSearch Dashboards takes of each kind it has: the attributes both products share."""


@dataclass(frozen=True)
class Product:
    name: str
    """kibana or opensearch-dashboards"""
    version: tuple[int, ...]


class KibanaImportError(RuntimeError):
    """The import did not happen, or not for every object; the message says which failed."""

    def __init__(self, message: str, failed: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.failed = failed or []


def multipart(field: str, filename: str, content: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with one file part, and its Content-Type header value."""
    boundary = f"----logferry{secrets.token_hex(16)}"
    while boundary.encode() in content:
        boundary = f"----logferry{secrets.token_hex(16)}"
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: application/ndjson\r\n"
        "\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head + content + tail, f"multipart/form-data; boundary={boundary}"


def count_objects(ndjson: bytes) -> int:
    """Saved objects in an export: one per line, without the export's closing summary line."""
    count = 0
    for line in ndjson.splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        if "exportedCount" not in item:
            count += 1
    return count


def describe(error: dict[str, Any]) -> str:
    detail = error.get("error") or {}
    reason = detail.get("type", "unknown")
    if reason == "missing_references":
        refs = ", ".join(f"{r.get('type')}/{r.get('id')}" for r in detail.get("references", []))
        reason += f" ({refs})"
    elif detail.get("message"):
        reason += f": {detail['message']}"
    title = error.get("title") or (error.get("meta") or {}).get("title") or ""
    name = f"{error.get('type')}/{error.get('id')}"
    return f"{name} {title!r}: {reason}" if title else f"{name}: {reason}"


def call(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[dict[str, Any], dict[str, str]]:
    """One request; the reply's JSON object and headers, or KibanaImportError saying why not."""
    request = urllib.request.Request(
        url, data=body, method=method, headers={"Accept": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            replied = {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace").strip()
        raise KibanaImportError(
            f"Kibana at {url} answered HTTP {exc.code}: {text[:500] or exc.reason}"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise KibanaImportError(f"cannot reach Kibana at {url}: {reason}") from exc
    try:
        reply = json.loads(raw)
    except ValueError as exc:
        raise KibanaImportError(f"Kibana at {url}: reply is not JSON: {raw[:200]!r}") from exc
    if not isinstance(reply, dict):
        raise KibanaImportError(f"Kibana at {url}: unexpected reply {raw[:200]!r}")
    return reply, replied


def probe(kibana_url: str, *, timeout: float = 30) -> Product:
    """Which product answers at the URL, and its version."""
    reply, headers = call(kibana_url.rstrip("/") + "/api/status", timeout=timeout)
    number = str((reply.get("version") or {}).get("number") or "0")
    version = tuple(int(part) for part in number.split("-")[0].split(".") if part.isdigit())
    if "osd-name" in headers:
        return Product("opensearch-dashboards", version)
    return Product("kibana", version)


def for_opensearch_dashboards(ndjson: bytes) -> bytes:
    """The objects OpenSearch Dashboards can hold, with only the attributes it knows."""
    kept = []
    for line in ndjson.splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        shared = SHARED_ATTRIBUTES.get(item.get("type"))
        if shared is None:
            continue
        attributes = {k: v for k, v in item["attributes"].items() if k in shared}
        kept.append(
            {
                "type": item["type"],
                "id": item["id"],
                "attributes": attributes,
                "references": item.get("references", []),
            }
        )
    return b"".join(json.dumps(item).encode() + b"\n" for item in kept)


def add_log_source(kibana_url: str, pattern: str, *, timeout: float = 30) -> bool:
    """Adds the pattern to Kibana's log sources; False when it was there already."""
    url = kibana_url.rstrip("/") + SETTINGS_PATH
    reply, _ = call(url, timeout=timeout)
    given = (reply.get("settings") or {}).get(LOG_SOURCES, {}).get("userValue")
    sources = list(given) if isinstance(given, list) else list(LOG_SOURCES_DEFAULT)
    if pattern in sources:
        return False
    body = json.dumps({"changes": {LOG_SOURCES: [*sources, pattern]}}).encode()
    headers = {"Content-Type": "application/json", "kbn-xsrf": "true"}
    call(url, "POST", body, headers, timeout)
    return True


def import_saved_objects(
    kibana_url: str, ndjson: bytes, *, xsrf: str = "kbn-xsrf", timeout: float = 30
) -> int:
    """POST the NDJSON to the import API with overwrite; returns how many were imported.

    Raises KibanaImportError when Kibana cannot be reached, answers with an HTTP error, or
    reports objects it did not import (listing each with its reason).
    """
    expected = count_objects(ndjson)
    body, content_type = multipart("file", FILENAME, ndjson)
    url = kibana_url.rstrip("/") + IMPORT_PATH
    reply, _ = call(url, "POST", body, {"Content-Type": content_type, xsrf: "true"}, timeout)

    errors = reply.get("errors") or []
    imported = reply.get("successCount")
    if reply.get("success") is not True or errors:
        listed = "; ".join(describe(e) for e in errors) or "no errors listed"
        raise KibanaImportError(
            f"Kibana imported {imported} of {expected} saved objects; failed: {listed}", errors
        )
    if not isinstance(imported, int) or imported != expected:
        raise KibanaImportError(
            f"Kibana reported success but imported {imported} of {expected} saved objects"
        )
    return imported
