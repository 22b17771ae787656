"""The collector's own Prometheus metrics (served by collector.probes)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge


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
        self.metadata_missing = Counter(
            "logferry_collector_records_without_metadata",
            "Records shipped without pod metadata from the API (tag metadata_missing)",
        )
        self.files_open = Gauge("logferry_collector_files_open", "Log files held open")
        self.files_waiting = Gauge(
            "logferry_collector_files_waiting",
            "Log files found but not opened because max_open_files is reached",
        )
        self.files_let_go = Counter(
            "logferry_collector_files_let_go",
            "Files closed before they were read to their end, by reason: excluded (pod or "
            "container excluded after it was opened), deleted_limit (max_deleted_files or "
            "max_deleted_bytes reached), unreadable (a damaged .gz)",
            ["reason"],
        )
        self.unread_bytes_let_go = Counter(
            "logferry_collector_unread_bytes_let_go",
            "Bytes of files let go that were never read, by reason (as files_let_go)",
            ["reason"],
        )
        for reason in ("excluded", "deleted_limit", "unreadable"):
            # Shown at 0 from the start, so an alert on their rate has a series to watch.
            self.files_let_go.labels(reason)
            self.unread_bytes_let_go.labels(reason)
        self.deleted_open_files = Gauge(
            "logferry_collector_deleted_open_files", "Files deleted on disk but still held open"
        )
        self.deleted_open_bytes = Gauge(
            "logferry_collector_deleted_open_bytes",
            "Size of the files deleted on disk but still held open (disk space they keep)",
        )
        self.gzip_files_read = Counter(
            "logferry_collector_gzip_files_read",
            "Rotated files whose rest was read from kubelet's .gz because the original was gone",
        )
        self.bytes_behind = Gauge(
            "logferry_collector_bytes_behind", "Bytes written but not read yet", ["path"]
        )


METRICS = Metrics()
