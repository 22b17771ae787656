"""Import saved objects (the dashboards) into Kibana through its saved-objects import API.

Kibana answers HTTP 200 even when objects fail to import (`success: false`, with `errors`), so
the reply's `success`, `successCount` and `errors` are checked, not only the status. Standard
library only.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from typing import Any

IMPORT_PATH = "/api/saved_objects/_import?overwrite=true"
FILENAME = "logferry.ndjson"


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


def import_saved_objects(kibana_url: str, ndjson: bytes, *, timeout: float = 30) -> int:
    """POST the NDJSON to Kibana's import API with overwrite; returns how many were imported.

    Raises KibanaImportError when Kibana cannot be reached, answers with an HTTP error, or
    reports objects it did not import (listing each with its reason).
    """
    expected = count_objects(ndjson)
    body, content_type = multipart("file", FILENAME, ndjson)
    url = kibana_url.rstrip("/") + IMPORT_PATH
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": content_type,
            "kbn-xsrf": "true",
            "Accept": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace").strip()
        raise KibanaImportError(
            f"Kibana import at {url} answered HTTP {exc.code}: {text[:500] or exc.reason}"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise KibanaImportError(f"cannot reach Kibana at {url}: {reason}") from exc
    try:
        reply = json.loads(raw)
    except ValueError as exc:
        raise KibanaImportError(
            f"Kibana import at {url}: reply is not JSON: {raw[:200]!r}"
        ) from exc
    if not isinstance(reply, dict):
        raise KibanaImportError(f"Kibana import at {url}: unexpected reply {raw[:200]!r}")

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
