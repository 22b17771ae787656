"""Routing: `--topic` as a template of record fields, with a counted fallback topic."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from collector.config import parse
from collector.enrich import PodInfo
from collector.metrics import METRICS
from collector.route import Topics
from logferry.settings import SettingError
from logferry.topics import legal
from tests.unit.logfiles import (
    ListSink,
    agent,
    append,
    cri_line,
    docker_container,
    docker_line,
    drain,
)

LABELS = {"app": "cart", "app.kubernetes.io/name": "cart-ui", "odd": "a/b"}


@pytest.mark.parametrize(
    ("template", "fields", "topic", "why"),
    [
        ("logs", {}, "logs", None),
        ("logs.{kubernetes.namespace}", {"kubernetes.namespace": "shop"}, "logs.shop", None),
        ("logs.{ kubernetes.namespace }", {"kubernetes.namespace": "shop"}, "logs.shop", None),
        ("logs.{kubernetes.namespace}", {}, "fallback", "missing"),
        ("logs.{kubernetes.namespace}", {"kubernetes.namespace": ""}, "fallback", "missing"),
        ("logs.{kubernetes.namespace}", {"kubernetes.namespace": None}, "fallback", "missing"),
        ("{kubernetes.namespace}", {"kubernetes.namespace": ".."}, "fallback", "illegal"),
        ("l.{kubernetes.labels.app}", {"kubernetes.labels": LABELS}, "l.cart", None),
        (
            "l.{kubernetes.labels.app.kubernetes.io/name}",
            {"kubernetes.labels": LABELS},
            "l.cart-ui",
            None,
        ),
        ("l.{kubernetes.labels.odd}", {"kubernetes.labels": LABELS}, "fallback", "illegal"),
        ("l.{kubernetes.labels.none}", {"kubernetes.labels": LABELS}, "fallback", "missing"),
        ("l.{kubernetes.labels}", {"kubernetes.labels": LABELS}, "fallback", "missing"),
        ("l.{kubernetes.namespace}", {"kubernetes.namespace": "x" * 248}, "fallback", "illegal"),
        ("{kubernetes.namespace}", {"kubernetes.namespace": "x" * 249}, "x" * 249, None),
        ("l.{kubernetes.namespace}", {"kubernetes.namespace": "shöp"}, "fallback", "illegal"),
        (
            "{kubernetes.namespace}.{kubernetes.container.name}",
            {"kubernetes.namespace": "shop", "kubernetes.container.name": "app"},
            "shop.app",
            None,
        ),
        ("n.{host.name}", {}, "n.node-a", None),
    ],
)
def test_a_template_gives_the_topic_or_the_fallback_with_the_reason(
    template: str, fields: dict[str, Any], topic: str, why: str | None
) -> None:
    assert Topics(template, "fallback", "node-a").render(fields) == (topic, why)


@pytest.mark.parametrize(
    "flags",
    [
        ["--topic", "logs/{kubernetes.namespace}"],
        ["--topic", "logs.{}"],
        ["--topic", "logs.{kubernetes.namespace"],
        ["--topic", "logs.kubernetes.namespace}"],
        ["--topic", ".."],
        ["--topic", "x" * 250],
        ["--topic-fallback", "no such"],
        ["--topic-fallback", "logs.{kubernetes.namespace}"],
    ],
)
def test_a_topic_kafka_cannot_have_is_refused_at_start(flags: list[str]) -> None:
    with pytest.raises(SettingError, match="topic"):
        parse(["--sink", "stdout", *flags])


def test_the_template_is_read_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "collector.yaml"
    path.write_text("topic: logs.{kubernetes.namespace}\ntopic_fallback: logs.unrouted\n")
    config = parse(["--config", str(path), "--sink", "stdout"])
    assert (config.topic, config.topic_fallback) == ("logs.{kubernetes.namespace}", "logs.unrouted")


def test_legal_names() -> None:
    assert legal("logs.shop_1-a")
    assert legal("x" * 249)
    assert not any(map(legal, ["", ".", "..", "x" * 250, "a b", "a/b", "a:b"]))


def cri(tmp: Path, ns: str, pod: str) -> Path:
    folder = tmp / "log" / "pods" / f"{ns}_{pod}_uid-{pod}" / "app"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "0.log"


def fallbacks(reason: str) -> float:
    return METRICS.topic_fallbacks.labels(reason)._value.get()


def test_each_namespaces_records_go_to_its_topic_and_the_rest_to_the_fallback(
    tmp_path: Path,
) -> None:
    append(cri(tmp_path, "shop", "cart-1"), cri_line("a1"), cri_line("a2"))
    append(cri(tmp_path, "bank", "ledger-1"), cri_line("b1"))
    # A json-file container that is no pod's: nothing names its namespace.
    folder = docker_container(tmp_path / "docker", "c" * 64).parent
    (folder / "config.v2.json").write_text('{"ID": "%s", "Name": "/plain"}' % ("c" * 64))
    append(folder / f"{'c' * 64}-json.log", docker_line("plain"))
    sink = ListSink()
    before = fallbacks("missing")
    drain(agent(tmp_path, sink, "--topic", "logs.{kubernetes.namespace}"))
    got = {r["message"]: t for r, t in zip(sink.records, sink.topics, strict=True)}
    assert got == {"a1": "logs.shop", "a2": "logs.shop", "b1": "logs.bank", "plain": "logs"}
    assert fallbacks("missing") - before == 1


def test_the_topic_is_worked_out_once_per_container_not_per_line(tmp_path: Path) -> None:
    log = cri(tmp_path, "shop", "cart-1")
    sink = ListSink()
    a = agent(tmp_path, sink, "--topic", "logs.{kubernetes.namespace}")
    rendered: list[dict[str, Any]] = []
    render = a.reader.topics.render
    a.reader.topics.render = lambda fields: rendered.append(fields) or render(fields)  # type: ignore[method-assign]
    for n in range(5):
        append(log, *(cri_line(f"line {n}.{i}") for i in range(100)))
        drain(a, turns=3)
    assert len(sink.records) == 500
    assert set(sink.topics) == {"logs.shop"}
    assert len(rendered) == 1


@dataclass(eq=False)
class Container:
    folder: str
    meta: dict[str, Any]
    info: PodInfo | None = None


def test_a_containers_topic_follows_its_pod_metadata_when_it_arrives() -> None:
    """A json-file container whose path names no namespace waits for the API: its first
    batches go to the fallback, the ones after its pod is known to the namespace's topic."""
    topics = Topics("logs.{kubernetes.namespace}", "logs")
    group = Container("/var/lib/docker/containers/abc", {"container.id": "abc"})
    before = fallbacks("missing")
    assert topics.of(group, 3) == "logs"
    group.info = PodInfo({"kubernetes.namespace": "shop"}, excluded=False, multiline=None)
    assert topics.of(group, 2) == "logs.shop"
    group.info = PodInfo({"kubernetes.namespace": "bank"}, excluded=False, multiline=None)
    assert topics.of(group, 2) == "logs.bank"
    assert fallbacks("missing") - before == 3
