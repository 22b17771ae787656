"""The collector's own Prometheus metrics and its /metrics, /healthz and /readyz endpoints."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.bytes_read = Counter("logferry_collector_read_bytes", "Bytes read from log files")
        self.lines_read = Counter("logferry_collector_read_lines", "Lines read from log files")
        self.records_produced = Counter(
            "logferry_collector_records_produced", "Records handed to the sink"
        )
        self.delivery_errors = Counter(
            "logferry_collector_delivery_errors", "Records or batches the sink failed to deliver"
        )
        self.parse_errors = Counter(
            "logferry_collector_parse_errors", "Lines that were not valid Docker or CRI format"
        )
        self.truncated = Counter(
            "logferry_collector_truncated_records", "Records cut at the maximum record size"
        )
        self.files_open = Gauge("logferry_collector_files_open", "Log files held open")
        self.files_waiting = Gauge(
            "logferry_collector_files_waiting",
            "Log files found but not opened because max_open_files is reached",
        )
        self.bytes_behind = Gauge(
            "logferry_collector_bytes_behind", "Bytes written but not read yet", ["path"]
        )


METRICS = Metrics()


class Health:
    """What the probes report: alive while the main loop turns, ready once it has scanned."""

    def __init__(self, stall_after: float = 30.0) -> None:
        self.beat = time.monotonic()
        self.ready = False
        self.stall_after = stall_after

    def alive(self) -> bool:
        return time.monotonic() - self.beat < self.stall_after


def serve(port: int, health: Health, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self.reply(200, generate_latest(), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                ok = health.alive()
                self.reply(200 if ok else 503, b"ok\n" if ok else b"main loop stalled\n")
            elif self.path == "/readyz":
                ok = health.ready and health.alive()
                self.reply(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
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

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
