"""A small HTTP proxy in front of the real Elasticsearch that answers 429 (or another
refusal) for chosen items of a bulk request, or puts another reply in place of the node's.

A real node answers an item with 429 only under load that a test cannot produce on cue.
The proxy takes the chosen items out of the request before passing it on, so they are
really not indexed, and puts a 429 item in their place in the node's real reply. Every
other request, and every other item, is the node's own answer. What stands between a
client and the node (a load balancer, a proxy) may also answer a bulk request with a body
that is no reply to it: `replies` are given in place of the node's, which still indexed
the request.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

JSON = "application/vnd.elasticsearch+json;compatible-with=8"
BUSY = {
    "status": 429,
    "error": {
        "type": "es_rejected_execution_exception",
        "reason": "rejected by the test proxy in front of Elasticsearch",
    },
}


class Proxy:
    def __init__(self, target: str, refuse: Callable[[str, int], bool]) -> None:
        self.target = target.rstrip("/")
        self.refuse = refuse
        """(document _id, times it was sent before) -> answer 429 for it this time."""
        self.sent: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.gate = threading.Event()
        """Until set, a bulk request with a refused item is held: later bulks overtake it."""
        self.gate.set()
        self.bodies: list[int] = []
        """The size of every bulk request's body, in the order they came."""
        self.at_once = 0
        self.most_at_once = 0
        """The most bulk requests the proxy held at one time."""
        self.hidden: set[str] = set()
        """Index templates answered as missing, as Elasticsearch answers for one that is:
        deleting them on the shared server would disturb the tests running beside."""
        self.hidden_asked = 0
        self.refusal: dict[str, Any] = BUSY
        """The item put in place of each refused document."""
        self.replies: list[tuple[int, bytes, str]] = []
        """(status, body, content type) given for the next bulk requests, in order, in
        place of the node's own replies."""
        self.held = threading.Event()
        """While cleared, every bulk request waits before it is passed on (a node slow to
        answer); set by default."""
        self.held.set()
        self.bulk_ids: list[list[str]] = []
        """The `_id`s of every bulk request, in the order they came."""
        self.replaced: list[list[str]] = []
        """The `_id`s of the bulk requests answered from `replies`."""

    def bulk(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes, str]:
        lines = body.splitlines()
        self.held.wait(120)
        status, reply, kind = self.pass_on(method, path, body, headers, lines)
        with self.lock:
            ids = [next(iter(orjson.loads(line).values())).get("_id", "") for line in lines[::2]]
            self.bulk_ids.append(ids)
            if self.replies:
                self.replaced.append(ids)
                return self.replies.pop(0)
        return status, reply, kind

    def pass_on(
        self, method: str, path: str, body: bytes, headers: dict[str, str], lines: list[bytes]
    ) -> tuple[int, bytes, str]:
        passed: list[bytes] = []
        busy: set[int] = set()
        for n in range(0, len(lines), 2):
            action = orjson.loads(lines[n])
            doc_id = next(iter(action.values())).get("_id", "")
            with self.lock:
                refuse = self.refuse(doc_id, self.sent[doc_id])
                self.sent[doc_id] += 1
                if refuse:
                    self.refused[doc_id] += 1
            if refuse:
                busy.add(n // 2)
            else:
                passed += lines[n : n + 2]
        if not busy:
            return self.forward(method, path, body, headers)
        self.gate.wait(120)
        items: Iterator[dict[str, Any]] = iter([])
        kind = JSON
        if passed:
            status, reply, kind = self.forward(method, path, b"\n".join(passed) + b"\n", headers)
            if status != 200:
                return status, reply, kind
            items = iter(orjson.loads(reply).get("items", []))
        merged = [
            {"create": self.refusal} if n in busy else next(items) for n in range(len(lines) // 2)
        ]
        return 200, orjson.dumps({"errors": True, "items": merged}), kind

    def forward(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes, str]:
        request = urllib.request.Request(
            self.target + path, data=body, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as reply:
                return reply.status, reply.read(), reply.headers.get("Content-Type", JSON)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), exc.headers.get("Content-Type", JSON)


def missing_template(name: str) -> bytes:
    reason = f"index template matching [{name}] not found"
    error = {"type": "resource_not_found_exception", "reason": reason}
    return orjson.dumps({"error": {"root_cause": [error], **error}, "status": 404})


@contextmanager
def proxy(target: str, refuse: Callable[[str, int], bool]) -> Iterator[tuple[str, Proxy]]:
    """The proxy's URL while the block runs, and the proxy (for its counts)."""
    state = Proxy(target, refuse)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def handle_any(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {
                k: v
                for k, v in self.headers.items()
                if k.lower() in ("content-type", "accept", "authorization")
            }
            name = self.path.split("?")[0].removeprefix("/_index_template/")
            if method == "GET" and name in state.hidden:
                state.hidden_asked += 1
                status, reply, kind = 404, missing_template(name), JSON
            elif method in ("POST", "PUT") and self.path.split("?")[0].endswith("/_bulk") and body:
                with state.lock:
                    state.bodies.append(len(body))
                    state.at_once += 1
                    state.most_at_once = max(state.most_at_once, state.at_once)
                try:
                    status, reply, kind = state.bulk(method, self.path, body, headers)
                finally:
                    with state.lock:
                        state.at_once -= 1
            else:
                status, reply, kind = state.forward(method, self.path, body, headers)
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("X-Elastic-Product", "Elasticsearch")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(reply)

        def do_GET(self) -> None:
            self.handle_any("GET")

        def do_POST(self) -> None:
            self.handle_any("POST")

        def do_PUT(self) -> None:
            self.handle_any("PUT")

        def do_HEAD(self) -> None:
            self.handle_any("HEAD")

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the test reads the proxy's counts, not its log."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
