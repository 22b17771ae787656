"""deploy/kubernetes/monitoring and deploy/grafana: valid for the tools that load them, and
every metric they query is one the collector or the pipeline serves.

monitoring-check (built by deploy/tools/fetch-validators.sh) decodes the PodMonitors and the
PrometheusRule with the Prometheus Operator's own Go types (unknown fields are errors), loads
the rule groups with Prometheus's own rule loader, parses each query with Prometheus's PromQL
parser, and lists the metric names the queries select.
"""

from __future__ import annotations

import importlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.registry import REGISTRY

from tests.unit.test_manifests import KUBE, collector, kustomize_build, missing, one, tool

REPO = Path(__file__).resolve().parents[2]
MONITORING = KUBE / "monitoring"
DASHBOARD = REPO / "deploy" / "grafana" / "logferry.json"
SERVED_BY_PROMETHEUS = {"up"}


def check(mode: str, text: str) -> subprocess.CompletedProcess[str]:
    binary = tool("monitoring-check")
    if binary is None:
        missing("monitoring-check not found")
    return subprocess.run(
        [str(binary), mode], input=text, capture_output=True, text=True, check=False
    )


def names_used(mode: str, text: str) -> set[str]:
    done = check(mode, text)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


def served() -> set[str]:
    """The series names our processes export, from the metrics modules both programs load."""
    # Importing them registers every family of both programs in this process's registry.
    for module in ("collector.metrics", "logferry.probes", "pipeline.metrics"):
        importlib.import_module(module)
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_count", "_sum"]}
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        if family.name.startswith("logferry_")
        for suffix in suffixes.get(family.type, [""])
    }


@pytest.fixture(scope="module")
def monitoring() -> list[dict[str, Any]]:
    return kustomize_build(MONITORING)


def test_monitoring_manifests_load_and_query_served_metrics(
    monitoring: list[dict[str, Any]],
) -> None:
    used = names_used("manifests", yaml.safe_dump_all(monitoring))
    assert used
    assert used - SERVED_BY_PROMETHEUS <= served(), used - served()


def test_dashboard_queries_parse_and_use_served_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = names_used("exprs", json.dumps(exprs))
    assert used - SERVED_BY_PROMETHEUS <= served(), used - served()


def test_dashboard_layout() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "logferry-overview"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    (variable,) = dashboard["templating"]["list"]
    assert variable["name"] == "datasource"


def test_pod_monitors_select_our_pods_by_their_metrics_port(
    monitoring: list[dict[str, Any]],
) -> None:
    base = kustomize_build(KUBE)
    workloads = {
        "logferry-collector": collector(base),
        "logferry-pipeline": one(base, "Deployment"),
    }
    for name, workload in workloads.items():
        monitor = one(monitoring, "PodMonitor", name)
        template = workload["spec"]["template"]
        labels = template["metadata"]["labels"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        ports = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
        assert endpoint["port"] in ports
        assert monitor["metadata"]["namespace"] == workload["metadata"]["namespace"]


@pytest.mark.parametrize(
    ("mode", "text"),
    [
        ("exprs", json.dumps(["rate(logferry_x_total[5m)"])),
        (
            "manifests",
            yaml.safe_dump(
                {
                    "apiVersion": "monitoring.coreos.com/v1",
                    "kind": "PodMonitor",
                    "metadata": {"name": "typo"},
                    "spec": {"selector": {}, "podMetricEndpoints": [{"port": "metrics"}]},
                }
            ),
        ),
        (
            "manifests",
            yaml.safe_dump(
                {
                    "apiVersion": "monitoring.coreos.com/v1",
                    "kind": "PrometheusRule",
                    "metadata": {"name": "bad"},
                    "spec": {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up =="}]}]},
                }
            ),
        ),
    ],
    ids=["bad-promql", "misspelled-field", "bad-rule"],
)
def test_the_checker_refuses_what_prometheus_refuses(mode: str, text: str) -> None:
    assert check(mode, text).returncode != 0
