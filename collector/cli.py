"""`python -m collector`: settings, signals, then the agent's loop."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING

from confluent_kafka import KafkaException
from prometheus_client import REGISTRY

from collector.agent import Agent
from collector.budget import Budget, return_big_buffers
from collector.config import Config, parse
from collector.forward import ForwardServer
from collector.reload import Reloader
from collector.route import Topics
from collector.sink import KafkaSink, Sink, StreamSink
from collector.statelock import StateDirLocked, lock_state_dir
from logferry import jsonlog
from logferry.probes import Health, serve
from logferry.settings import SettingError

if TYPE_CHECKING:
    from collector.enrich import Enricher

log = logging.getLogger("collector")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = parse(argv)
    except SettingError as exc:
        print(f"collector: {exc}", file=sys.stderr)
        return 2
    jsonlog.setup(config.log_level)
    # First: a second collector on the folder must say so, not fail later on a busy port.
    # The lock's descriptor is never closed: the kernel lets go of it when the process ends.
    try:
        lock_state_dir(config.state_dir)
    except (StateDirLocked, OSError) as exc:
        print(f"collector: setting state_dir: {exc}", file=sys.stderr)
        return 2
    health = Health()
    if config.metrics_port:
        try:
            serve(config.metrics_port, health)
        except OSError as exc:
            print(
                f"collector: setting metrics_port: cannot listen on {config.metrics_port}: {exc}",
                file=sys.stderr,
            )
            return 2
    agent: Agent | None = None
    listener: ForwardServer | None = None
    halted = False
    """A stop asked for before the agent was built (its import and the sink take a second):
    the agent, once built, stops at once instead of running on until SIGKILL."""

    def halt() -> None:
        nonlocal halted
        halted = True
        if agent is not None:
            agent.stopping = True
        if listener is not None:
            listener.drain()

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        halt()

    def sink_failed(reason: str) -> None:
        health.fail(reason)
        halt()

    reloader = Reloader(argv, config_file(argv))

    def reload(_signum: int, _frame: FrameType | None) -> None:
        reloader.asked = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    sink: Sink
    try:
        if config.sink == "kafka":
            sink = KafkaSink(
                Topics(config.topic, config.topic_fallback).default,
                config.kafka,
                config.delivery_timeout if config.once else None,
            )
            sink.on_failure = sink_failed
        else:
            sink = StreamSink.for_spec(config.sink)
    except KafkaException as exc:
        print(f"collector: setting kafka: {exc.args[0].str()}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"collector: setting sink: {exc}", file=sys.stderr)
        return 2
    try:
        enricher = start_enricher(config)
    except SettingError as exc:
        print(f"collector: {exc}", file=sys.stderr)
        return 2
    # One budget for files and forward clients alike: what either holds, the other cannot.
    budget = Budget(config.memory_limit)
    return_big_buffers()
    try:
        agent = Agent(config, sink, health, enricher, budget, reloader)
    except (OSError, ValueError) as exc:
        print(f"collector: setting state_dir: {exc}", file=sys.stderr)
        return 2
    agent.stopping = halted
    log.info("collector started, sink %s", config.sink)
    try:
        if config.forward_port and not config.once:
            listener = ForwardServer(config, sink, enricher, budget=budget)
            try:
                listener.start()
            except OSError as exc:
                listener = None
                print(
                    f"collector: setting forward_port: cannot listen on {config.forward_port}: "
                    f"{exc}",
                    file=sys.stderr,
                )
                return 2
        elif config.forward_port:
            log.warning("forward_port is not listened on with --once")
        settle_startup_objects()
        code = agent.run()
    finally:
        if listener is not None:
            listener.stop(config.shutdown_grace)
        if enricher is not None:
            enricher.stop()
    if config.once:
        print(summary(len(agent.opened), sink.undelivered()), file=sys.stderr)
    return verdict(sink, code)


GC_YOUNG = 50_000
"""Allocations between collections of the youngest objects (Python's default: 700)."""


def settle_startup_objects() -> None:
    """What startup made (modules, classes, settings) lives as long as the process: frozen,
    the cycle collector no longer walks it on every older-generation pass. And a read's
    short-lived tuples (thousands a read) are mostly gone before a collection looks at them
    once it runs every GC_YOUNG allocations. Cycles made later are still collected.
    Together 3% of the instructions of a --once run over 8 MB of access logs."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG, 10, 10)


def summary(files: int, undelivered: int) -> str:
    """--once's account of its run, from the metrics it kept."""

    def total(name: str) -> int:
        return int(REGISTRY.get_sample_value(f"logferry_collector_{name}_total") or 0)

    return (
        f"collector: once: {files} files, {total('read_lines')} lines, "
        f"{total('read_bytes')} bytes read; {total('records_produced')} records, "
        f"{total('records_acknowledged')} delivered, {undelivered} undelivered"
    )


def verdict(sink: Sink, code: int) -> int:
    """The exit code; records not delivered make it 1, named on the last line.

    A pod that exits non-zero is restarted, and a job or a script running --once learns that
    its logs are not all in Kafka yet.
    """
    left = sink.undelivered()
    if not left and sink.failure is None:
        return code
    why = f": {sink.failure}" if sink.failure else " at stop"
    print(
        f"collector: {left} records undelivered to {sink.where}{why}; checkpoints stay "
        "before them, the next run reads them again",
        file=sys.stderr,
    )
    return 1


def config_file(argv: Sequence[str] | None) -> str | None:
    """The --config file the settings came from, to watch for changes."""
    given = argparse.ArgumentParser(add_help=False)
    given.add_argument("--config")
    return given.parse_known_args(argv)[0].config


def start_enricher(config: Config) -> Enricher | None:
    """The pod watch, when asked for or when running in a cluster.

    Not waited for: records wait for its first lists (collector.annotate), while the agent
    opens the files at once; after a restart, time spent before the first scan is time in
    which kubelet may rotate a half-read file away.

    Raises SettingError when `kubernetes` is on and there are no credentials, or the
    kubeconfig cannot be used: records asked to carry pod metadata must not ship without
    it. A server that does not answer is no reason: it may be restarting, and records wait
    for it (`metadata_sync_wait`). In auto, as when it stops answering later, the watch
    says why and retries."""
    if not config.wants_kubernetes():
        log.info("kubernetes metadata off: not in a cluster and no KUBECONFIG")
        return None
    # Imported here: the kubernetes client costs 150 ms and 30 MB, for nothing without an API.
    from kubernetes.config import ConfigException

    from collector.enrich import Enricher

    enricher = Enricher(
        config.node_name,
        grace=config.metadata_grace,
        annotations=config.annotations or None,
        kubeconfig=config.kubeconfig or None,
    )
    if config.kubernetes == "on":
        try:
            enricher.configure()
        except ConfigException as exc:
            if config.kubeconfig:
                raise SettingError(f"setting kubeconfig: {exc}") from exc
            raise SettingError(f"setting kubernetes: on, but {exc}") from exc
    enricher.start()
    return enricher
