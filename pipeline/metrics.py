"""The indexer's Prometheus metrics (served by logferry.probes)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()


class Metrics:
    def __init__(self) -> None:
        self.indexed = Counter("logferry_pipeline_documents_indexed", "Documents indexed")
        self.duplicates = Counter(
            "logferry_pipeline_documents_duplicate",
            "Documents Elasticsearch already had (create refused with 409)",
        )
        self.dead_lettered = Counter(
            "logferry_pipeline_documents_dead_lettered", "Documents sent to the dead-letter topic"
        )
        self.dead_letters_cut = Counter(
            "logferry_pipeline_dead_letters_cut",
            "Letters whose record text was cut to fit the dead-letter topic's message limit",
        )
        self.dead_letter_failures = Counter(
            "logferry_pipeline_dead_letter_failures",
            "Letters the dead-letter topic refused, to be sent again (nothing committed meanwhile)",
        )
        self.uncommitted_at_stop = Counter(
            "logferry_pipeline_bulks_uncommitted_at_stop",
            "Bulks a shutdown left unfinished: their records are read again by the next owner",
        )
        self.retries = Counter("logferry_pipeline_retries", "Bulk requests or items retried")
        self.commit_failures = Counter(
            "logferry_pipeline_commit_failures",
            "Offset commits Kafka refused (a rebalance under way); tried again while the "
            "partitions stay this member's",
        )
        self.bulk_seconds = Histogram(
            "logferry_pipeline_bulk_seconds",
            "Duration of one bulk request that Elasticsearch answered (failed attempts are in"
            " the retries counter)",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.lag = Gauge(
            "logferry_pipeline_consumer_lag_records",
            "Records not yet consumed",
            ["topic", "partition"],
        )


METRICS = Metrics()
