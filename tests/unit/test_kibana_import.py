"""pipeline.kibana against a local HTTP stand-in for Kibana and OpenSearch Dashboards.

Neither can run on this machine (no image registry, no build from a package registry), so
these tests check the requests the importer sends (path with overwrite, `kbn-xsrf` or
`osd-xsrf`, a multipart body with the field `file`, the advanced-settings change) and how it
reads the documented replies: success, `success: false` with `errors`, a short
`successCount`, HTTP errors, `GET /api/status` with the product's own `kbn-name` or
`osd-name` header, and `GET /api/kibana/settings` with user values only.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pipeline.kibana import KibanaImportError, count_objects, import_saved_objects
from pipeline.setup import DASHBOARDS, install_dashboards

NDJSON = (Path(__file__).resolve().parents[2] / "dashboards" / "logferry.ndjson").read_bytes()
OBJECTS = [json.loads(line) for line in NDJSON.splitlines() if line.strip()]


@dataclass
class Seen:
    method: str
    path: str
    headers: Message
    body: bytes


@dataclass
class StandIn:
    url: str
    requests: list[Seen] = field(default_factory=list)
    status: int = 200
    reply: Any = None
    product: str = "kbn-name"
    version: str = "8.19.7"
    settings: dict[str, Any] = field(default_factory=dict)
    """User-provided advanced settings, as GET /api/kibana/settings lists them."""

    def succeed(self, count: int) -> None:
        self.status = 200
        self.reply = {
            "success": True,
            "successCount": count,
            "successResults": [
                {"type": o["type"], "id": o["id"], "meta": {"title": o["attributes"]["title"]}}
                for o in OBJECTS[:count]
            ],
        }


@pytest.fixture
def kibana() -> Iterator[StandIn]:
    stand_in = StandIn(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            stand_in.requests.append(Seen("GET", self.path, self.headers, b""))
            if self.path.endswith("/api/status"):
                self.answer(200, {"name": "k", "version": {"number": stand_in.version}})
            elif self.path.endswith("/api/kibana/settings") and stand_in.product == "kbn-name":
                given = {k: {"userValue": v} for k, v in stand_in.settings.items()}
                self.answer(200, {"settings": given})
            else:
                self.answer(404, {"statusCode": 404, "error": "Not Found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            stand_in.requests.append(Seen("POST", self.path, self.headers, body))
            if self.path.endswith("/api/kibana/settings"):
                if self.headers.get("kbn-xsrf") is None:
                    self.answer(400, {"message": "Request must contain a kbn-xsrf header."})
                    return
                stand_in.settings.update(json.loads(body)["changes"])
                self.answer(200, {"settings": stand_in.settings})
                return
            self.answer(stand_in.status, stand_in.reply)

        def answer(self, status: int, reply: Any) -> None:
            data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header(stand_in.product, "the-name")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    stand_in.url = f"http://127.0.0.1:{server.server_address[1]}"
    stand_in.succeed(len(OBJECTS))
    try:
        yield stand_in
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def parts(seen: Seen) -> list[Message]:
    """The multipart/form-data body parsed by the standard library's MIME parser."""
    head = f"Content-Type: {seen.headers['Content-Type']}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + seen.body)
    assert message.is_multipart()
    return list(message.iter_parts())


def test_request_is_a_multipart_upload_with_overwrite_and_xsrf(kibana: StandIn) -> None:
    assert import_saved_objects(kibana.url, NDJSON) == len(OBJECTS)
    (seen,) = kibana.requests
    assert seen.method == "POST"
    assert seen.path == "/api/saved_objects/_import?overwrite=true"
    assert seen.headers["kbn-xsrf"] == "true"
    assert seen.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    (part,) = parts(seen)
    assert part.get_param("name", header="content-disposition") == "file"
    assert part.get_filename() == "logferry.ndjson"
    assert part.get_payload(decode=True) == NDJSON


def test_kibana_under_a_base_path(kibana: StandIn) -> None:
    import_saved_objects(kibana.url + "/kibana/", NDJSON)
    assert kibana.requests[0].path == "/kibana/api/saved_objects/_import?overwrite=true"


def test_objects_are_counted_without_the_export_summary() -> None:
    summary = b'{"exportedCount":7,"missingRefCount":0,"missingReferences":[]}\n'
    assert count_objects(NDJSON) == len(OBJECTS) == count_objects(NDJSON + summary)


def test_failed_objects_are_named(kibana: StandIn) -> None:
    kibana.reply = {
        "success": False,
        "successCount": len(OBJECTS) - 2,
        "errors": [
            {
                "id": "logferry-top-pods",
                "type": "lens",
                "meta": {"title": "Top pods by volume"},
                "error": {
                    "type": "missing_references",
                    "references": [{"type": "index-pattern", "id": "logferry-data-view"}],
                },
            },
            {
                "id": "logferry-overview",
                "type": "dashboard",
                "title": "logferry: container logs",
                "error": {"type": "unknown", "message": "version conflict", "statusCode": 409},
            },
        ],
    }
    with pytest.raises(KibanaImportError) as caught:
        import_saved_objects(kibana.url, NDJSON)
    text = str(caught.value)
    assert f"imported {len(OBJECTS) - 2} of {len(OBJECTS)}" in text
    assert "lens/logferry-top-pods" in text
    assert "missing_references (index-pattern/logferry-data-view)" in text
    assert "dashboard/logferry-overview" in text
    assert "version conflict" in text
    assert [e["id"] for e in caught.value.failed] == ["logferry-top-pods", "logferry-overview"]


def test_success_false_without_errors_still_fails(kibana: StandIn) -> None:
    kibana.reply = {"success": False, "successCount": 0}
    with pytest.raises(KibanaImportError, match="no errors listed"):
        import_saved_objects(kibana.url, NDJSON)


def test_a_short_success_count_fails(kibana: StandIn) -> None:
    kibana.succeed(len(OBJECTS) - 1)
    with pytest.raises(KibanaImportError, match=f"imported {len(OBJECTS) - 1} of {len(OBJECTS)}"):
        import_saved_objects(kibana.url, NDJSON)


def test_http_500_fails_with_the_status_and_body(kibana: StandIn) -> None:
    kibana.status = 500
    kibana.reply = {"statusCode": 500, "error": "Internal Server Error", "message": "boom"}
    with pytest.raises(KibanaImportError, match=r"HTTP 500.*boom"):
        import_saved_objects(kibana.url, NDJSON)


def test_a_reply_that_is_not_json_fails(kibana: StandIn) -> None:
    kibana.reply = b"<html>proxy error</html>"
    with pytest.raises(KibanaImportError, match="not JSON"):
        import_saved_objects(kibana.url, NDJSON)


def test_unreachable_kibana_fails_clearly() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(KibanaImportError, match="cannot reach Kibana"):
        import_saved_objects(f"http://127.0.0.1:{port}", NDJSON, timeout=5)


def test_setup_imports_the_repository_dashboards(kibana: StandIn) -> None:
    kibana.version = "8.14.3"  # before log sources: only the import
    said: list[str] = []
    assert install_dashboards(kibana.url, said.append) == len(OBJECTS)
    (posted,) = [r for r in kibana.requests if r.method == "POST"]
    assert parts(posted)[0].get_payload(decode=True) == DASHBOARDS.read_bytes()
    assert said == [f"kibana: {len(OBJECTS)} saved objects imported from logferry.ndjson"]
    assert not any("settings" in r.path for r in kibana.requests)


def test_kibana_log_sources_gain_our_pattern_and_keep_the_defaults(kibana: StandIn) -> None:
    said: list[str] = []
    install_dashboards(kibana.url, said.append)
    assert kibana.settings["observability:logSources"] == [
        "logs-*-*", "logs-*", "filebeat-*", "logferry-*",
    ]  # fmt: skip
    assert said[-1] == "kibana: logferry-* added to the log sources"
    posts = [r for r in kibana.requests if r.method == "POST"]
    install_dashboards(kibana.url, said.append)
    assert said[-1] == "kibana: logferry-* already in the log sources"
    again = [r for r in kibana.requests if r.method == "POST"][len(posts) :]
    assert [r.path for r in again] == ["/api/saved_objects/_import?overwrite=true"]


def test_a_users_own_log_sources_are_kept(kibana: StandIn) -> None:
    kibana.settings["observability:logSources"] = ["app-logs-*"]
    install_dashboards(kibana.url, lambda _: None)
    assert kibana.settings["observability:logSources"] == ["app-logs-*", "logferry-*"]


def test_opensearch_dashboards_get_what_they_can_hold(kibana: StandIn) -> None:
    kibana.product, kibana.version = "osd-name", "2.19.1"
    kinds = [o for o in OBJECTS if o["type"] in ("index-pattern", "search")]
    kibana.succeed(len(kinds))
    said: list[str] = []
    assert install_dashboards(kibana.url, said.append) == len(kinds)
    (posted,) = [r for r in kibana.requests if r.method == "POST"]
    assert posted.headers["osd-xsrf"] == "true"
    assert posted.headers["kbn-xsrf"] is None
    sent = [json.loads(line) for line in parts(posted)[0].get_payload(decode=True).splitlines()]
    assert [(o["type"], o["id"]) for o in sent] == [(o["type"], o["id"]) for o in kinds]
    view = sent[0]
    assert view["attributes"] == {"title": "logferry-*", "timeFieldName": "@timestamp"}
    for search in sent[1:]:
        assert set(search["attributes"]) <= {
            "title", "description", "columns", "sort", "kibanaSavedObjectMeta",
        }  # fmt: skip
        assert search["references"] == [
            {"id": view["id"], "name": "kibanaSavedObjectMeta.searchSourceJSON.index",
             "type": "index-pattern"}
        ]  # fmt: skip
    assert "coreMigrationVersion" not in posted.body.decode()
    assert not any("settings" in r.path for r in kibana.requests)
    assert said == [
        f"opensearch-dashboards: {len(kinds)} saved objects imported from logferry.ndjson"
    ]
