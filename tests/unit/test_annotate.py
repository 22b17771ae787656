"""What a container gets from its pod (collector.annotate): metadata, parser, multi-line rule,
and whether its records wait. The enricher is a real one left unstarted: it knows no pod,
as before the API answered; its first lists are given to it as the reflector would, and
what the API says of a pod as the PodInfo it would build."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from collector.annotate import Annotator
from collector.budget import Budget, FileReads
from collector.enrich import Enricher, PodInfo
from collector.files import Group, OpenFiles
from tests.unit.logfiles import append, cri_line, settings

MULTILINE = ("--multiline", "shop/*/app=java", "--multiline", "*/*/*=python")


def opened(tmp: Path, *flags: str, enricher: Enricher | None = None) -> tuple[Annotator, Group]:
    """One identified CRI file of shop/cart/app."""
    folder = tmp / "log" / "pods" / "shop_cart_0f1e2d3c" / "app"
    folder.mkdir(parents=True)
    append(folder / "0.log", cri_line("hello"))
    config = settings(tmp, *flags)
    annotator = Annotator(config, enricher)
    files = OpenFiles(config, FileReads(Budget(config.memory_limit)), annotator)
    files.scan()
    (group,) = files.groups.values()
    for file in group.files:
        assert files.identify(file)
    return annotator, group


def rule_name(group: Group) -> str | None:
    return None if group.joiner.rule is None else group.joiner.rule.name


def info(**fields: str | None) -> PodInfo:
    parser, multiline = fields.pop("parser", None), fields.pop("multiline", None)
    return PodInfo(dict(fields), False, multiline, parser)


def test_the_first_multiline_glob_the_container_matches_chooses_its_rule(tmp_path: Path) -> None:
    annotator, group = opened(tmp_path, *MULTILINE)
    assert rule_name(group) == "java"
    rule = annotator.multiline_rule({"kubernetes.namespace": "web", "kubernetes.pod.name": "x",
                                     "kubernetes.container.name": "y"})  # fmt: skip
    assert rule is not None
    assert rule.name == "python"
    assert Annotator(settings(tmp_path), None).multiline_rule(group.meta) is None


def test_a_pods_annotations_override_the_node_and_bad_ones_are_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    annotator, group = opened(tmp_path, *MULTILINE)
    annotator.apply(group, info(parser="logfmt", multiline="go"))
    (file,) = group.files
    assert file.encoder is not None
    assert file.encoder.mode == "logfmt"
    assert rule_name(group) == "go"
    annotator.apply(group, info(parser="yaml", multiline="("))
    assert file.encoder.mode == "auto", "the node's parser"
    assert rule_name(group) == "java", "the node's rule"
    said = [r.getMessage() for r in caplog.records if "pod annotation ignored" in r.getMessage()]
    assert len(said) == 2
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_records_carry_what_the_api_said_over_what_the_path_said(tmp_path: Path) -> None:
    annotator, group = opened(tmp_path, "--node-name", "node-b")
    (file,) = group.files
    assert file.encoder is not None
    assert file.encoder.meta["kubernetes.pod.name"] == "cart"
    assert file.encoder.meta["container.runtime"] == "cri"
    assert file.encoder.meta["host.name"] == "node-b"
    annotator.apply(group, info(**{"kubernetes.pod.name": "cart-7d9f", "container.id": "abc"}))
    assert file.encoder.meta["kubernetes.pod.name"] == "cart-7d9f"
    assert file.encoder.meta["container.id"] == "abc"
    assert file.encoder.meta["kubernetes.namespace"] == "shop"


def answered(enricher: Enricher) -> float:
    """The API answers the enricher's first lists: no pod, no namespace."""
    enricher._replace_pods([])
    enricher._replace_namespaces([])
    assert enricher.answered_at is not None
    return enricher.answered_at


def test_records_wait_for_the_api_until_metadata_wait_then_go_marked_missing(
    tmp_path: Path,
) -> None:
    enricher = Enricher("node-a")
    annotator, group = opened(tmp_path, "--metadata-wait", "5", enricher=enricher)
    (file,) = group.files
    assert file.encoder is not None
    assert file.encoder.missing
    assert b"metadata_missing" in file.encoder.template
    # The API answered after the files were found: the wait counts from its answer.
    since = answered(enricher)
    assert since >= group.born
    assert not annotator.metadata(group, since + 4.9)
    assert annotator.metadata(group, since + 5.0)
    # Files found after the answer: from when they were found.
    group.born = since + 60
    assert not annotator.metadata(group, group.born + 4.9)
    assert annotator.metadata(group, group.born + 5.0)
    annotator.apply(group, info(**{"kubernetes.pod.name": "cart"}))
    assert not file.encoder.missing
    assert b"metadata_missing" not in file.encoder.template
    assert annotator.metadata(group, group.born)
    group.info = PodInfo({}, True, None)
    assert not annotator.metadata(group, group.born + 60), "excluded: its records never go"


def test_until_the_api_first_answers_records_wait_metadata_sync_wait(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The enricher left unstarted has not heard from the API: `metadata_wait` is not what
    bounds the wait then, `metadata_sync_wait` is; reaching it is said and counted once."""
    annotator, group = opened(
        tmp_path, "--metadata-wait", "5", "--metadata-sync-wait", "30", enricher=Enricher("n")
    )
    expired = "logferry_collector_metadata_sync_wait_expired_total"
    before = REGISTRY.get_sample_value(expired) or 0
    # A clock reading seen in a run: (born + 30) - born is 29.999999999999943 there.
    group.born = 502.655336309
    assert not annotator.metadata(group, group.born + 29.9)
    assert annotator.metadata(group, group.born + 30)
    assert annotator.metadata(group, group.born + 31)
    assert REGISTRY.get_sample_value(expired) == before + 1
    said = [r for r in caplog.records if "metadata_sync_wait" in r.getMessage()]
    assert len(said) == 1
    assert said[0].levelno == logging.WARNING


def test_an_api_that_fails_is_an_answer_not_waited_for(tmp_path: Path) -> None:
    enricher = Enricher("node-a")
    annotator, group = opened(tmp_path, "--metadata-wait", "5", enricher=enricher)
    version = enricher.version
    enricher._state("pods", False, ConnectionRefusedError("connection refused"))
    since = enricher.answered_at
    assert since is not None
    assert enricher.version != version, "lookups depend on what fails: callers look again"
    assert not annotator.metadata(group, since + 4.9)
    assert annotator.metadata(group, since + 5.0)


def test_without_an_api_records_never_wait(tmp_path: Path) -> None:
    annotator, group = opened(tmp_path, "--metadata-wait", "5")
    (file,) = group.files
    assert annotator.metadata(group, group.born)
    assert file.encoder is not None
    assert not file.encoder.missing
    assert not annotator.excluded(group.meta)


def test_new_settings_reach_every_open_encoder_and_joiner(tmp_path: Path) -> None:
    annotator, group = opened(tmp_path)
    (file,) = group.files
    assert file.encoder is not None
    before = file.encoder.processor
    annotator.reconfigure(
        settings(tmp_path, "--parser", "json", *MULTILINE, "--multiline-timeout", "3"), [group]
    )
    assert file.encoder.mode == "json"
    assert file.encoder.processor is annotator.processor is not before
    assert rule_name(group) == "java"
    assert group.joiner.timeout == 3.0
