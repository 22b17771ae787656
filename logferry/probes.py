"""The /metrics, /healthz and /readyz endpoints that both programs serve."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest

READY = Gauge("logferry_ready", "1 while /readyz answers 200, else 0")


class Health:
    """What the probes report: alive while the main loop turns and the sink can deliver,
    ready once it has scanned."""

    def __init__(self, stall_after: float = 30.0) -> None:
        self.beat = time.monotonic()
        self.ready = False
        self.stall_after = stall_after
        self.failure: str | None = None
        """Why the process can no longer do its work (a fatal Kafka error...): a restart is
        the cure, so the liveness probe says so until the process exits."""

    def fail(self, reason: str) -> None:
        self.failure = reason

    def alive(self) -> bool:
        return self.failure is None and time.monotonic() - self.beat < self.stall_after

    def why_not_alive(self) -> str:
        return self.failure or "main loop stalled"

    def reason(self) -> str | None:
        """Why /readyz fails, None when ready."""
        if not self.alive():
            return self.why_not_alive()
        return None if self.ready else "starting"


def serve(port: int, health: Health, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self.reply(200, generate_latest(), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                if health.alive():
                    self.reply(200, b"ok\n")
                else:
                    self.reply(503, f"{health.why_not_alive()}\n".encode())
            elif self.path == "/readyz":
                why = health.reason()
                if why is None:
                    self.reply(200, b"ready\n")
                else:
                    self.reply(503, f"not ready: {why}\n".encode())
            else:
                self.reply(404, b"not found\n")

        def reply(self, status: int, body: bytes, kind: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Probes every few seconds would drown the collector's own log."""

    # Read at each scrape, so an alert sees what the readiness probe sees.
    READY.set_function(lambda: 1.0 if health.reason() is None else 0.0)
    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
