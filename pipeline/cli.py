"""`python -m pipeline run|setup`."""

from __future__ import annotations

import gc
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from confluent_kafka import KafkaError, KafkaException
from elastic_transport import TransportError
from elasticsearch import ApiError

from logferry import jsonlog
from logferry.probes import serve
from logferry.settings import SettingError, version
from pipeline.config import Config, parse, shown
from pipeline.indexer import Indexer, client
from pipeline.readiness import Readiness
from pipeline.retention import retain
from pipeline.setup import install_dashboards, install_templates
from pipeline.templates import IndexSettings

log = logging.getLogger("pipeline")


USAGE = """usage: python -m pipeline {run,setup,retention} [options]

  run        index records from Kafka into Elasticsearch (the consumer group)
  setup      install the index templates; with --kibana URL, import the dashboards
  retention  delete the daily indices older than --keep-days (a dry run without --apply)

`python -m pipeline COMMAND --help` lists that command's options."""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if args[:1] == ["--version"]:
        print(f"logferry {version()}")
        return 0
    try:
        config = parse(args)
    except SettingError as exc:
        print(f"pipeline: {exc}", file=sys.stderr)
        return 2
    jsonlog.setup(config.log_level)
    # The Elasticsearch client logs every request at INFO: one line per bulk, several a second.
    logging.getLogger("elastic_transport.transport").setLevel(logging.WARNING)
    # Their warnings repeat, once per retry, what the indexer reports once with a count.
    logging.getLogger("elastic_transport.node_pool").setLevel(logging.ERROR)
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    if config.command == "setup":
        return setup(config)
    if config.command == "retention":
        return retention(config)
    return run(config)


def where(config: Config, exc: ApiError | TransportError) -> str:
    """The server and what it or the connection said."""
    # A TransportError's str() is only its kind ("TLS error"); the cause is in .message.
    reason = f"{exc}: {exc.message}" if isinstance(exc, TransportError) else str(exc)
    return f"{shown(config.elasticsearch_url)}: {reason}"


def setup(config: Config) -> int:
    es = client(config)
    try:
        install_templates(
            es, IndexSettings(config.shards, config.replicas, config.refresh_interval)
        )
    except (ApiError, TransportError) as exc:
        print(f"pipeline: setup failed at {where(config, exc)}", file=sys.stderr)
        return 1
    if config.kibana:
        try:
            install_dashboards(config.kibana)
        except Exception as exc:
            print(f"pipeline: dashboard import into {config.kibana} failed: {exc}", file=sys.stderr)
            return 1
    return 0


def retention(config: Config) -> int:
    try:
        retain(client(config), config.index, config.keep_days, config.apply)
    except ValueError as exc:
        print(f"pipeline: setting index: {exc}", file=sys.stderr)
        return 2
    except (ApiError, TransportError) as exc:
        print(f"pipeline: retention failed at {where(config, exc)}", file=sys.stderr)
        return 1
    return 0


def run(config: Config) -> int:
    # A batch holds tens of thousands of tracked objects (messages, entries) at a time, and
    # the default thresholds scanned them again and again: a quarter of the indexer's CPU.
    # Collections now come every 100,000 allocations, and what start-up built is left out.
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    health = Readiness()
    if config.metrics_port:
        try:
            serve(config.metrics_port, health)
        except OSError as exc:
            print(f"pipeline: setting metrics_port: {exc}", file=sys.stderr)
            return 2
    try:
        indexer = Indexer(config, client(config), health)
    except KafkaException as exc:
        print(f"pipeline: setting kafka: {exc.args[0].str()}", file=sys.stderr)
        return 2

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: finishing the bulk in flight", signal.Signals(signum).name)
        indexer.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("pipeline started: %s -> %s", config.topic, shown(config.elasticsearch_url))
    try:
        return indexer.run()
    except KafkaException as exc:
        # confluent-kafka raises a fatal error (the idempotent dead-letter producer refused
        # by every broker, a listener that is no broker's) from poll/flush/consume.
        error = exc.args[0]
        text = error.str() if isinstance(error, KafkaError) else str(error)
        health.fail(f"kafka: {text}")
        print(
            f"pipeline: kafka fatal error: {text}; nothing is committed past what was indexed",
            file=sys.stderr,
        )
        return 1
