#!/usr/bin/env bash
# The tools tests/unit/test_manifests.py needs to check deploy/ offline, installed into
# .state/tools/ (idempotent: a second run with the same versions does nothing):
#
#   bin/kustomize     renders the base and the overlays exactly as `kubectl apply -k` would
#                     (built from its Go module by `go install`)
#   bin/kubeconform   validates the rendered manifests against JSON schemas (Go module)
#   bin/compose-check loads deploy/compose/docker-compose.yml as `docker compose` does, with
#                     the Compose reference loader (Go module compose-go: schema, references,
#                     interpolation) and prints the resulting project as JSON; its source is
#                     the few lines below, built in .state/tools/src/compose-check
#   bin/monitoring-check
#                     checks deploy/kubernetes/monitoring and deploy/grafana offline: the
#                     Prometheus Operator's own API types decode the PodMonitors and the
#                     PrometheusRule strictly, Prometheus's own rule loader and PromQL parser
#                     check the rules and the dashboard's queries, and it prints the metric
#                     names they use; its source is below, built in .state/tools/src/monitoring-check
#   schemas/vX.Y.0-standalone-strict/
#                     the Kubernetes JSON schemas, laid out the way kubeconform looks for them.
#                     They come from the PyPI package kubernetes-validate, which ships schemas
#                     generated from the official OpenAPI document of each Kubernetes release;
#                     the test also validates with that package's own (Python) validator.
#
# Needs Go (1.26 is enough for these versions) and the project's venv. Without Go it says so
# and exits 0, like deploy/local/*.sh fetch without Java: the tests that need a tool then skip,
# or fail under CI=true. A build that fails exits 1.
#
# Environment:
#   LOGFERRY_TOOLS_DIR  where to install (default: <repo>/.state/tools)
#   PYTHON              the venv's python (default: <repo>/.venv/bin/python, else python3)
#   K8S_SCHEMA_VERSIONS Kubernetes versions to lay out for kubeconform (default below)
set -euo pipefail

KUSTOMIZE_VERSION=v5.8.2      # v5.8.3 needs Go 1.27
KUBECONFORM_VERSION=v0.8.0
COMPOSE_GO_VERSION=v2.16.2
COMPOSE_CHECK_REVISION=2  # bump when the Go source below changes
PROMETHEUS_VERSION=v0.316.0   # the Go module of Prometheus 3.x
PROMETHEUS_OPERATOR_VERSION=v0.95.2
MONITORING_CHECK_REVISION=1  # bump when the Go source below changes
KUBERNETES_VALIDATE_VERSION=1.37.0
K8S_SCHEMA_VERSIONS=${K8S_SCHEMA_VERSIONS:-"1.35.0 1.36.0 1.37.0"}

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
TOOLS=${LOGFERRY_TOOLS_DIR:-$REPO_ROOT/.state/tools}
BIN=$TOOLS/bin
SCHEMAS=$TOOLS/schemas
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x $REPO_ROOT/.venv/bin/python ]]; then PYTHON=$REPO_ROOT/.venv/bin/python; else PYTHON=python3; fi
fi

say() { echo "fetch-validators: $*" >&2; }

mkdir -p "$BIN" "$SCHEMAS"

go_tool() { # name module version
    local name=$1 module=$2 version=$3 stamp="$BIN/.$1-$3"
    if [[ -x $BIN/$name && -e $stamp ]]; then
        return 0
    fi
    if ! command -v go >/dev/null 2>&1; then
        say "go not found: cannot build $name; the manifest tests will skip (fail under CI=true)"
        return 0
    fi
    say "building $name $version (go install $module)"
    rm -f "$BIN/.$name-"*
    if ! GOBIN=$BIN GOTOOLCHAIN=local GOFLAGS=-mod=mod go install "$module@$version"; then
        say "go install $module@$version failed"
        return 1
    fi
    touch "$stamp"
}

status=0
go_tool kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION" || status=1
go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION" || status=1

compose_check() {
    local stamp="$BIN/.compose-check-$COMPOSE_GO_VERSION-$COMPOSE_CHECK_REVISION" src=$TOOLS/src/compose-check
    if [[ -x $BIN/compose-check && -e $stamp ]]; then
        return 0
    fi
    if ! command -v go >/dev/null 2>&1; then
        say "go not found: cannot build compose-check; the compose test will skip (fail under CI=true)"
        return 0
    fi
    say "building compose-check (compose-go $COMPOSE_GO_VERSION)"
    rm -rf "$src" && mkdir -p "$src"
    cat >"$src/go.mod" <<EOF_MOD
module logferry.local/compose-check

go 1.24

require (
	github.com/compose-spec/compose-go/v2 $COMPOSE_GO_VERSION
	go.yaml.in/yaml/v3 v3.0.6
)
EOF_MOD
    cat >"$src/main.go" <<'EOF_GO'
// compose-check FILE: load a Compose file as `docker compose` does and print the project JSON.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: compose-check FILE")
		os.Exit(2)
	}
	options, err := cli.NewProjectOptions([]string{os.Args[1]})
	if err != nil {
		fail(err)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fail(err)
	}
	out, err := project.MarshalJSON()
	if err != nil {
		fail(err)
	}
	os.Stdout.Write(out)
}
EOF_GO
    rm -f "$BIN/.compose-check-"*
    if ! (cd "$src" && GOTOOLCHAIN=local GOFLAGS=-mod=mod go mod tidy \
        && GOTOOLCHAIN=local go build -o "$BIN/compose-check" .); then
        say "building compose-check failed"
        return 1
    fi
    touch "$stamp"
}
compose_check || status=1

monitoring_check() {
    local stamp="$BIN/.monitoring-check-$PROMETHEUS_VERSION-$PROMETHEUS_OPERATOR_VERSION-$MONITORING_CHECK_REVISION"
    local src=$TOOLS/src/monitoring-check
    if [[ -x $BIN/monitoring-check && -e $stamp ]]; then
        return 0
    fi
    if ! command -v go >/dev/null 2>&1; then
        say "go not found: cannot build monitoring-check; the monitoring tests will skip (fail under CI=true)"
        return 0
    fi
    say "building monitoring-check (prometheus $PROMETHEUS_VERSION, prometheus-operator $PROMETHEUS_OPERATOR_VERSION)"
    rm -rf "$src" && mkdir -p "$src"
    cat >"$src/go.mod" <<EOF_MOD
module logferry.local/monitoring-check

go 1.24

require (
	github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring $PROMETHEUS_OPERATOR_VERSION
	github.com/prometheus/prometheus $PROMETHEUS_VERSION
	sigs.k8s.io/yaml v1.6.0
)
EOF_MOD
    cat >"$src/main.go" <<'EOF_GO'
// monitoring-check: checks logferry's monitoring manifests and queries offline, with the
// Prometheus Operator's own API types and Prometheus's own rule and PromQL parsers.
//
//	monitoring-check manifests < stream.yaml   PodMonitor, ServiceMonitor and PrometheusRule
//	                                          documents, decoded strictly (an unknown field is
//	                                          an error); each rule group validated as Prometheus
//	                                          loads a rules file
//	monitoring-check exprs < exprs.json        a JSON array of PromQL expressions, each parsed
//
// Both print a JSON array of the metric names the expressions select; errors go to stderr
// with exit status 1.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	yamlv3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/yaml"
)

var promql = parser.NewParser(parser.Options{})

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func metrics(expr string, into map[string]bool) error {
	node, err := promql.ParseExpr(expr)
	if err != nil {
		return err
	}
	parser.Inspect(node, func(n parser.Node, _ []parser.Node) error {
		if v, ok := n.(*parser.VectorSelector); ok && v.Name != "" {
			into[v.Name] = true
		}
		return nil
	})
	return nil
}

func checkManifests(in io.Reader, names map[string]bool) {
	decoder := yamlv3.NewDecoder(in)
	for {
		var doc map[string]any
		err := decoder.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			fail("yaml: %v", err)
		}
		if doc == nil {
			continue
		}
		raw, err := yaml.Marshal(doc)
		if err != nil {
			fail("yaml: %v", err)
		}
		kind, _ := doc["kind"].(string)
		switch kind {
		case "PodMonitor":
			var m monitoringv1.PodMonitor
			if err := yaml.UnmarshalStrict(raw, &m); err != nil {
				fail("PodMonitor: %v", err)
			}
			if len(m.Spec.PodMetricsEndpoints) == 0 {
				fail("PodMonitor %s: no podMetricsEndpoints", m.Name)
			}
		case "ServiceMonitor":
			var m monitoringv1.ServiceMonitor
			if err := yaml.UnmarshalStrict(raw, &m); err != nil {
				fail("ServiceMonitor: %v", err)
			}
		case "PrometheusRule":
			var r monitoringv1.PrometheusRule
			if err := yaml.UnmarshalStrict(raw, &r); err != nil {
				fail("PrometheusRule: %v", err)
			}
			groups, err := yaml.Marshal(r.Spec)
			if err != nil {
				fail("PrometheusRule %s: %v", r.Name, err)
			}
			logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
			parsed, errs := rulefmt.Parse(groups, false, model.UTF8Validation, promql, logger)
			if len(errs) > 0 {
				fail("PrometheusRule %s: %v", r.Name, errors.Join(errs...))
			}
			for _, g := range parsed.Groups {
				for _, rule := range g.Rules {
					if err := metrics(rule.Expr, names); err != nil {
						fail("PrometheusRule %s: %v", r.Name, err)
					}
				}
			}
		default:
			fail("unexpected kind %q", kind)
		}
	}
}

func checkExprs(in io.Reader, names map[string]bool) {
	var exprs []string
	data, err := io.ReadAll(bufio.NewReader(in))
	if err != nil {
		fail("read: %v", err)
	}
	if err := json.Unmarshal(bytes.TrimSpace(data), &exprs); err != nil {
		fail("expected a JSON array of strings: %v", err)
	}
	for _, expr := range exprs {
		if err := metrics(expr, names); err != nil {
			fail("%q: %v", expr, err)
		}
	}
}

func main() {
	if len(os.Args) != 2 {
		fail("usage: monitoring-check manifests|exprs < input")
	}
	names := map[string]bool{}
	switch os.Args[1] {
	case "manifests":
		checkManifests(os.Stdin, names)
	case "exprs":
		checkExprs(os.Stdin, names)
	default:
		fail("usage: monitoring-check manifests|exprs < input")
	}
	list := make([]string, 0, len(names))
	for name := range names {
		list = append(list, name)
	}
	sort.Strings(list)
	out, _ := json.Marshal(list)
	os.Stdout.Write(append(out, '\n'))
}
EOF_GO
    rm -f "$BIN/.monitoring-check-"*
    if ! (cd "$src" && GOTOOLCHAIN=local GOFLAGS=-mod=mod go mod tidy \
        && GOTOOLCHAIN=local go build -o "$BIN/monitoring-check" .); then
        say "building monitoring-check failed"
        return 1
    fi
    touch "$stamp"
}
monitoring_check || status=1

# The schemas: from the kubernetes-validate package (also a test dependency of the project).
if ! "$PYTHON" -c 'import kubernetes_validate' >/dev/null 2>&1; then
    say "installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION into $("$PYTHON" -c 'import sys; print(sys.prefix)')"
    "$PYTHON" -m pip install --quiet "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi

# kubernetes-validate's "-local" schemas give each file an $id under kubernetes.io and refer
# to "/api/_definitions.json"; kubeconform resolves references against the file's location,
# so the copies lose their $id and refer to the sibling "_definitions.json" instead.
"$PYTHON" - "$SCHEMAS" $K8S_SCHEMA_VERSIONS <<'PY'
import json
import shutil
import sys
from importlib import metadata, resources
from pathlib import Path

out, versions = Path(sys.argv[1]), sys.argv[2:]
package = metadata.version("kubernetes-validate")
source = resources.files("kubernetes_validate") / "kubernetes-json-schema"
for version in versions:
    target = out / f"v{version}-standalone-strict"
    stamp = target / f".from-kubernetes-validate-{package}"
    if stamp.exists():
        continue
    origin = source / f"v{version}-local-strict"
    if not origin.is_dir():
        sys.exit(f"fetch-validators: kubernetes-validate {package} has no schemas for {version}")
    shutil.rmtree(target, ignore_errors=True)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    count = 0
    for file in origin.iterdir():
        if not file.name.endswith(".json"):
            continue
        schema = json.loads(file.read_text(encoding="utf-8"))
        schema.pop("$id", None)
        text = json.dumps(schema).replace('"/api/_definitions.json#', '"_definitions.json#')
        (partial / file.name).write_text(text, encoding="utf-8")
        count += 1
    (partial / stamp.name).touch()
    partial.rename(target)
    print(f"fetch-validators: {count} schemas for Kubernetes {version} in {target}", file=sys.stderr)
PY

exit "$status"
