"""`--kubernetes on` without usable credentials refuses to start; `auto` runs on without.

A user who asked for pod metadata must not get records shipped without it for want of a
kubeconfig. An API server that does not answer is another matter: with credentials the
collector starts, and records wait for metadata as they do in `auto`.

Each test runs with its own HOME, no KUBECONFIG and no in-cluster environment, the service
account's files pointed into tmp_path: what this machine has does not count.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml
from kubernetes.config import incluster_config

from collector.cli import start_enricher
from collector.config import parse
from logferry.settings import SettingError
from tests.unit.logfiles import append, cri_line

REPO = Path(__file__).resolve().parents[2]
CLOSED = "https://127.0.0.1:1"
"""An API server address nothing listens on: connections are refused at once."""


@pytest.fixture(autouse=True)
def no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HOME, outside any cluster; the service account's files (absent) in tmp."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in (
        *("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"),
        *("LOGFERRY_KUBERNETES", "KAFKA_BOOTSTRAP_SERVERS"),
    ):
        monkeypatch.delenv(name, raising=False)
    account = tmp_path / "serviceaccount"
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(account / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(account / "ca.crt"))
    return home


def kubeconfig(path: Path, server: str = CLOSED) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


def collector(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """A --once run over one CRI log line, with the environment the fixture left."""
    pod = tmp_path / "log" / "pods" / "ns_pod_uid" / "app"
    pod.mkdir(parents=True, exist_ok=True)
    (tmp_path / "docker").mkdir(exist_ok=True)
    append(pod / "0.log", cri_line("hello"))
    return subprocess.run(
        [
            sys.executable, "-m", "collector", "--once", "--sink", "stdout",
            "--docker-root", str(tmp_path / "docker"), "--log-root", str(tmp_path / "log"),
            "--state-dir", str(tmp_path / "state"), "--metrics-port", "0",
            "--node-name", "n", *flags,
        ],
        capture_output=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
        text=True,
    )  # fmt: skip


def refused(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    return line


def test_on_without_any_credentials_is_refused(tmp_path: Path) -> None:
    line = refused(collector(tmp_path, "--kubernetes", "on"))
    assert line == (
        "collector: setting kubernetes: on, but no credentials: not in a cluster "
        "(KUBERNETES_SERVICE_HOST unset), no KUBECONFIG and no "
        f"{tmp_path / 'home' / '.kube' / 'config'}"
    )


NOT_KUBECONFIGS = {
    "missing": (None, "Invalid kube-config file. No configuration found."),
    "a directory": (b"", "cannot read: Is a directory"),
    "other YAML": (b"sink: stdout\n", "Invalid kube-config file. Expected key current-context"),
    "a list": (b"- a\n- b\n", "not a kubeconfig (TypeError: list indices"),
    "broken YAML": (b"clusters: [\n", "line 2, column 1: expected the node content"),
    "binary": (b"\xff\xfe\x00b", "not a kubeconfig (UnicodeDecodeError: 'utf-8' codec"),
}


def not_a_kubeconfig(tmp_path: Path, case: str) -> Path:
    content = NOT_KUBECONFIGS[case][0]
    path = tmp_path / "kubeconfig"
    if content == b"":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    return path


@pytest.mark.parametrize("case", NOT_KUBECONFIGS)
def test_on_with_a_kubeconfig_flag_it_cannot_use_is_refused(tmp_path: Path, case: str) -> None:
    path = not_a_kubeconfig(tmp_path, case)
    line = refused(collector(tmp_path, "--kubernetes", "on", "--kubeconfig", str(path)))
    assert line.startswith(f"collector: setting kubeconfig: {path}: {NOT_KUBECONFIGS[case][1]}")


@pytest.mark.parametrize("case", NOT_KUBECONFIGS)
def test_on_with_a_kubeconfig_env_it_cannot_use_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    path = not_a_kubeconfig(tmp_path, case)
    monkeypatch.setenv("KUBECONFIG", str(path))
    line = refused(collector(tmp_path, "--kubernetes", "on"))
    assert line.startswith(
        f"collector: setting kubernetes: on, but KUBECONFIG {path}: {NOT_KUBECONFIGS[case][1]}"
    )


def test_on_with_a_broken_default_kubeconfig_is_refused(
    tmp_path: Path, no_credentials: Path
) -> None:
    default = no_credentials / ".kube" / "config"
    default.parent.mkdir()
    default.write_text("- a\n")
    line = refused(collector(tmp_path, "--kubernetes", "on"))
    assert line.startswith(f"collector: setting kubernetes: on, but {default}: not a kubeconfig")


def test_on_with_an_api_server_that_does_not_answer_starts(tmp_path: Path) -> None:
    """Credentials, but nothing listening: the API may be down for a moment, and the
    records go once it answers or fails (here at once: refused)."""
    path = kubeconfig(tmp_path / "kubeconfig")
    done = collector(tmp_path, "--kubernetes", "on", "--kubeconfig", str(path))
    assert done.returncode == 0, done.stderr[-2000:]
    (record,) = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert record["message"] == "hello"
    assert "Connection refused" in done.stderr


@pytest.mark.parametrize("case", ["missing", "a list", "broken YAML"])
def test_auto_with_a_kubeconfig_it_cannot_use_warns_once_and_runs_without(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    """As before, but in the reason's own words: a file the client could not parse was
    taken for a bug of ours, logged with its traceback on every retry."""
    path = not_a_kubeconfig(tmp_path, case)
    monkeypatch.setenv("KUBECONFIG", str(path))
    done = collector(tmp_path, "--kubernetes", "auto")
    assert done.returncode == 0, done.stderr[-2000:]
    assert [orjson.loads(line)["message"] for line in done.stdout.splitlines()] == ["hello"]
    *logged, _summary = done.stderr.splitlines()
    warnings = [
        orjson.loads(line)["message"]
        for line in logged
        if orjson.loads(line)["level"] in ("warning", "error")
    ]
    assert len(warnings) == 1, warnings
    for warning in warnings:
        assert f"KUBECONFIG {path}: {NOT_KUBECONFIGS[case][1]}" in warning


def test_auto_without_credentials_runs_without(tmp_path: Path) -> None:
    done = collector(tmp_path, "--kubernetes", "auto")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "kubernetes metadata off" in done.stderr


def test_on_in_a_pod_without_its_service_account_token_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "1")
    config = parse(["--sink", "stdout", "--node-name", "n", "--kubernetes", "on"])
    with pytest.raises(SettingError) as raised:
        start_enricher(config)
    assert str(raised.value) == (
        "setting kubernetes: on, but in-cluster service account: Service token file does not exist."
    )


def test_on_in_a_pod_with_its_service_account_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "1")
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("t")
    (account / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    config = parse(["--sink", "stdout", "--node-name", "n", "--kubernetes", "on"])
    enricher = start_enricher(config)
    assert enricher is not None
    enricher.stop()
