"""The collector's own Prometheus metrics (served by logferry.probes)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, disable_created_metrics

# One series per counter, not two: the *_created timestamps double what every node exports.
disable_created_metrics()


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
        self.truncated_bytes = Counter(
            "logferry_collector_truncated_bytes",
            "Bytes of log lines left out of records cut at max_record_bytes (read past, or "
            "cut from the text)",
        )
        self.invalid_utf8 = Counter(
            "logferry_collector_invalid_utf8_records",
            "Records whose text held invalid UTF-8 or lone surrogates, replaced by U+FFFD "
            "(tag invalid_utf8)",
        )
        self.partial_timeouts = Counter(
            "logferry_collector_partial_timeouts",
            "Lines the runtime split, shipped without their last piece after partial_timeout",
        )
        self.empty_lines = Counter(
            "logferry_collector_empty_lines", "Empty lines in log files, skipped (not shipped)"
        )
        self.metadata_missing = Counter(
            "logferry_collector_records_without_metadata",
            "Records shipped without pod metadata from the API (tag metadata_missing)",
        )
        self.metadata_sync_expired = Counter(
            "logferry_collector_metadata_sync_wait_expired",
            "Containers whose records went without pod metadata because the API had not "
            "answered its first lists within metadata_sync_wait",
        )
        self.sink_failures = Counter(
            "logferry_collector_sink_failures",
            "Times the sink gave up for good, by reason: fatal (fatal Kafka error), "
            "authentication, delivery_timeout (--once)",
            ["reason"],
        )
        self.files_open = Gauge("logferry_collector_files_open", "Log files held open")
        self.files_waiting = Gauge(
            "logferry_collector_files_waiting",
            "Log files found but not opened because max_open_files is reached",
        )
        self.unfinished_lines_ended = Counter(
            "logferry_collector_unfinished_lines_ended_total",
            "Last lines without a newline sent once their rotated or deleted file went "
            "unwritten for 5 s",
        )
        self.files_made_room = Counter(
            "logferry_collector_files_made_room_total",
            "Log files read to their end let go so that files waiting for max_open_files are read",
        )
        self.behind = Gauge(
            "logferry_collector_behind_bytes",
            "Bytes written to the open log files but not read yet, all files together",
        )
        self.parse_refused = Counter(
            "logferry_collector_parse_refused",
            "Records whose text was not parsed as structured fields although asked, by reason "
            "(too_large, too_deep, too_many_fields, invalid_json, not_object, invalid_logfmt)",
            ["reason"],
        )
        self.redactions = Counter(
            "logferry_collector_redactions",
            "Records in which a redaction rule hid something, by rule",
            ["rule"],
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
        self.producer_queue_full = Counter(
            "logferry_collector_producer_queue_full",
            "Times a record waited for room in librdkafka's queue (--kafka "
            "queue.buffering.max.kbytes / .messages): reading paused meanwhile",
        )
        self.metadata_trimmed = Counter(
            "logferry_collector_metadata_trimmed",
            "Sources whose pod metadata was past what a record may carry (64 KiB): its "
            "annotations left out, then its labels",
        )
        self.forward_skipped = Counter(
            "logferry_collector_forward_events_skipped",
            "Forwarded events that could not become a record, skipped (their chunk still "
            "answered), by reason: not_an_event (not [time, map]), unwritable (nested deeper "
            "than JSON is written, or a value JSON cannot hold)",
            ["reason"],
        )
        self.records_acknowledged = Counter(
            "logferry_collector_records_acknowledged",
            "Records the sink confirmed (for Kafka: acknowledged by the brokers)",
        )
        self.topic_fallbacks = Counter(
            "logferry_collector_topic_fallback_records",
            "Records sent to --topic-fallback: the --topic template missed a field (missing) "
            "or made no legal topic name (illegal)",
            ["reason"],
        )


METRICS = Metrics()
