#!/usr/bin/env bash
# Local Kubernetes API server for logferry's tests: a real etcd and a real kube-apiserver (RBAC,
# the usual admission plugins, ServiceAccount tokens), built once from their Go modules and run
# as plain processes. No kubelet, scheduler or controller-manager: tests create what those would.
#
#   deploy/local/kube.sh fetch    build etcd, kube-apiserver and kubectl into $STATE/kube/bin
#                                 (idempotent: a second run with the same versions does nothing)
#   deploy/local/kube.sh fetch-background
#                                 the same build, detached, its output in $STATE/kube/build.log;
#                                 `start` waits for it (what `make install` uses so the long
#                                 compile overlaps the other install steps)
#   deploy/local/kube.sh start    wait for / run the build, start etcd and kube-apiserver, wait
#                                 until ready; prints KUBECONFIG=... (an admin in system:masters)
#   deploy/local/kube.sh status   exit 0 + the same lines if running and ready, else exit 1
#   deploy/local/kube.sh stop     SIGTERM both, up to 30 s, then SIGKILL (idempotent)
#   deploy/local/kube.sh stop-apiserver
#                                 stop only kube-apiserver (tests: a watch broken while etcd
#                                 moves on); `start` brings it back
#   deploy/local/kube.sh reset    stop and delete etcd's data, certificates and keys
#
# stdout carries only NAME=value lines, so this works:
#   eval "export $(deploy/local/kube.sh start)"
# Lines: KUBECONFIG, KUBE_API_URL, KUBE_ETCD_URL (for tests that compact etcd), KUBE_AUDIT_LOG
# (every request's metadata, one JSON event a line), KUBECTL (the kubectl built here).
# `fetch-worker` is the detached process of fetch-background (it records its exit status).
# Exit codes: 0 ok, 1 failure (build failed, start timeout, port taken...), 3 impossible (no go
# or openssl).
#
# Environment:
#   LOGFERRY_SERVICES_DIR  folder (default <repo>/.state); all goes to $STATE/kube
#   KUBE_API_PORT          kube-apiserver's secure port (default 16443)
#   KUBE_ETCD_PORT         etcd client port (default 12379); the peer port is this + 1
#   KUBE_START_TIMEOUT     seconds to wait for readiness (default 120)
#   KUBE_BUILD_TIMEOUT     seconds `start` waits for a background build (default 2400)
set -euo pipefail

KUBERNETES_VERSION=v1.37.2
STAGING_VERSION=v0.37.2   # every staging module of k8s.io/kubernetes at the same release
ETCD_VERSION=v3.6.16
BUILD_REVISION=1          # bump when the build below changes
# The staging modules k8s.io/kubernetes's go.mod sends to ./staging/...: outside its repository
# each must be sent to its published release instead.
STAGING_MODULES="api apiextensions-apiserver apimachinery apiserver cli-runtime client-go
cloud-provider cluster-bootstrap code-generator component-base component-helpers
controller-manager cri-api cri-client cri-streaming csi-translation-lib
dynamic-resource-allocation endpointslice externaljwt kms kube-aggregator
kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics mount-utils
pod-security-admission sample-apiserver sample-cli-plugin sample-controller streaming"

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
STATE=${LOGFERRY_SERVICES_DIR:-$REPO_ROOT/.state}
KUBE_API_PORT=${KUBE_API_PORT:-16443}
KUBE_ETCD_PORT=${KUBE_ETCD_PORT:-12379}
KUBE_ETCD_PEER_PORT=$((KUBE_ETCD_PORT + 1))
KUBE_START_TIMEOUT=${KUBE_START_TIMEOUT:-120}
KUBE_BUILD_TIMEOUT=${KUBE_BUILD_TIMEOUT:-2400}

K="$STATE/kube"
BIN="$K/bin"
SRC="$K/src"
STAMP="$BIN/.built-$KUBERNETES_VERSION-$ETCD_VERSION-$BUILD_REVISION"
BUILD_LOG="$K/build.log"
BUILD_PID="$K/build.pid"
ETCD_DATA="$K/etcd"
PKI="$K/pki"
LOGS="$K/logs"
KUBECONFIG_FILE="$K/admin.kubeconfig"
API_URL="https://127.0.0.1:$KUBE_API_PORT"
ETCD_URL="http://127.0.0.1:$KUBE_ETCD_PORT"

log() { echo "kube.sh: $*" >&2; }

built() { [[ -x $BIN/etcd && -x $BIN/kube-apiserver && -x $BIN/kubectl && -e $STAMP ]]; }

# The build: two small modules under $SRC. Sizes and speed: -trimpath and -s -w keep the
# binaries small and the cache keys independent of the folder; kube-apiserver and kubectl are
# one `go build` so the packages they share are compiled once. etcd is its own module because
# k8s.io/kubernetes pins a newer etcd (v3.7) than the server version chosen here.
build_kubernetes() {
    local mod=$SRC/kubernetes m
    rm -rf "$mod" && mkdir -p "$mod"
    {
        echo "module logferry.local/kube-build"
        echo
        echo "go 1.26.0"
        echo
        echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
        echo
        echo "replace ("
        for m in $STAGING_MODULES; do echo "	k8s.io/$m => k8s.io/$m $STAGING_VERSION"; done
        echo ")"
    } >"$mod/go.mod"
    local version_flags="-X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION"
    version_flags+=" -X k8s.io/component-base/version.gitMajor=1"
    version_flags+=" -X k8s.io/component-base/version.gitMinor=37"
    version_flags+=" -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION"
    (cd "$mod" \
        && GOFLAGS=-mod=mod go get k8s.io/kubernetes/cmd/kube-apiserver@"$KUBERNETES_VERSION" \
            k8s.io/kubernetes/cmd/kubectl@"$KUBERNETES_VERSION" \
        && go build -trimpath -ldflags="-s -w $version_flags" -o "$BIN/" \
            k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl)
}

build_etcd() {
    local mod=$SRC/etcd
    rm -rf "$mod" && mkdir -p "$mod"
    printf 'module logferry.local/etcd-build\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
        "$ETCD_VERSION" >"$mod/go.mod"
    (cd "$mod" \
        && GOFLAGS=-mod=mod go get go.etcd.io/etcd/server/v3@"$ETCD_VERSION" \
        && go build -trimpath -ldflags="-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3)
}

cmd_fetch() {
    built && return 0
    mkdir -p "$K"
    # One build at a time per state folder (`make install` twice, or `start` beside it).
    exec 8>"$K/.build.lock"
    if command -v flock >/dev/null && ! flock -w "$KUBE_BUILD_TIMEOUT" 8; then
        log "another build held $K/.build.lock for ${KUBE_BUILD_TIMEOUT}s (KUBE_BUILD_TIMEOUT)"
        return 1
    fi
    built && return 0
    if ! command -v go >/dev/null 2>&1; then
        log "go not found: cannot build the Kubernetes API server; its tests will skip (fail under CI=true)"
        return 0
    fi
    mkdir -p "$BIN"
    rm -f "$BIN/.built-"*
    local t0=$SECONDS
    log "building etcd $ETCD_VERSION, kube-apiserver and kubectl $KUBERNETES_VERSION (about 15 min cold on 2 cores)"
    export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
    if ! build_etcd; then log "building etcd $ETCD_VERSION failed"; return 1; fi
    if ! build_kubernetes; then log "building kube-apiserver/kubectl $KUBERNETES_VERSION failed"; return 1; fi
    touch "$STAMP"
    exec 8>&-
    log "built in $((SECONDS - t0)) s into $BIN"
}

build_running() {
    [[ -f $BUILD_PID ]] || return 1
    local pid
    pid=$(cat "$BUILD_PID" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kube\.sh fetch-worker' || return 1
    echo "$pid"
}

cmd_fetch_background() {
    built && return 0
    build_running >/dev/null && return 0
    mkdir -p "$K"
    rm -f "$K/build.status"
    # Detached (setsid) with every fd on a file, so `make install` goes on at once; the exit
    # status lands in build.status for `start` to report.
    (setsid nohup "$SCRIPT_DIR/kube.sh" fetch-worker </dev/null >"$BUILD_LOG" 2>&1 8>&- 9>&- &
        echo $! >"$BUILD_PID")
    log "building in the background (log: $BUILD_LOG)"
}

wait_build() {
    local end=$((SECONDS + KUBE_BUILD_TIMEOUT))
    if build_running >/dev/null; then
        log "waiting for the background build (up to ${KUBE_BUILD_TIMEOUT}s; log: $BUILD_LOG)"
        while build_running >/dev/null; do
            if ((SECONDS >= end)); then
                log "the background build is still running after ${KUBE_BUILD_TIMEOUT}s (KUBE_BUILD_TIMEOUT); last lines of $BUILD_LOG:"
                tail -n 20 "$BUILD_LOG" >&2
                exit 1
            fi
            sleep 2
        done
    fi
    built && return 0
    if [[ -s $K/build.status && $(cat "$K/build.status") != 0 ]]; then
        log "the background build failed; last lines of $BUILD_LOG:"
        tail -n 40 "$BUILD_LOG" >&2
        log "building again in the foreground"
    fi
    cmd_fetch || exit 1
    if ! built; then log "the Kubernetes binaries are missing (go not found?); cannot start"; exit 3; fi
}

etcd_pid() { running etcd "$K/etcd.pid" "$BIN/etcd"; }
api_pid() { running kube-apiserver "$K/apiserver.pid" "$BIN/kube-apiserver"; }

running() {   # name pidfile binary: prints the pid if the pid file names that live process
    local pidfile=$2 binary=$3 pid
    [[ -f $pidfile ]] || return 1
    pid=$(cat "$pidfile" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$(readlink -f "$binary")" ]] || return 1
    echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

etcd_healthy() { curl -fsS --max-time 3 "$ETCD_URL/health" 2>/dev/null | grep -q '"health":"true"'; }
api_ready() { [[ $(curl -sS --max-time 5 --cacert "$PKI/serving.crt" "$API_URL/readyz" 2>/dev/null) == ok ]]; }

print_lines() {
    echo "KUBECONFIG=$KUBECONFIG_FILE"
    echo "KUBE_API_URL=$API_URL"
    echo "KUBE_ETCD_URL=$ETCD_URL"
    echo "KUBE_AUDIT_LOG=$LOGS/audit.log"
    echo "KUBECTL=$BIN/kubectl"
}

# The serving certificate is its own CA (self-signed, CA:TRUE) so the kubeconfig can trust it
# directly; the ServiceAccount token signing pair is a plain RSA key; the admin token is random.
make_pki() {
    mkdir -p "$PKI"
    chmod 700 "$PKI"
    if [[ ! -s $PKI/serving.crt || ! -s $PKI/serving.key ]]; then
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 \
            -keyout "$PKI/serving.key" -out "$PKI/serving.crt" \
            -subj "/CN=logferry-kube-apiserver" \
            -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign" \
            -addext "extendedKeyUsage=serverAuth" >/dev/null 2>&1
    fi
    if [[ ! -s $PKI/sa.key || ! -s $PKI/sa.pub ]]; then
        openssl genrsa -out "$PKI/sa.key" 2048 >/dev/null 2>&1
        openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" >/dev/null 2>&1
    fi
    if [[ ! -s $PKI/tokens.csv ]]; then
        echo "$(openssl rand -hex 24),logferry-admin,logferry-admin,system:masters" >"$PKI/tokens.csv"
    fi
    # Every request's metadata (who, verb, URI), without bodies: what the tests count.
    cat >"$K/audit-policy.yaml" <<'EOF_POLICY'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
EOF_POLICY
    local token
    token=$(cut -d, -f1 "$PKI/tokens.csv")
    cat >"$KUBECONFIG_FILE.new" <<EOF_KUBECONFIG
apiVersion: v1
kind: Config
clusters:
  - name: logferry-local
    cluster:
      server: $API_URL
      certificate-authority: $PKI/serving.crt
users:
  - name: logferry-admin
    user:
      token: $token
contexts:
  - name: logferry-admin
    context:
      cluster: logferry-local
      user: logferry-admin
current-context: logferry-admin
EOF_KUBECONFIG
    chmod 600 "$KUBECONFIG_FILE.new"
    mv "$KUBECONFIG_FILE.new" "$KUBECONFIG_FILE"
}

print_logs() {
    local f
    for f in "$LOGS/etcd.log" "$LOGS/kube-apiserver.log"; do
        if [[ -s $f ]]; then log "last 30 lines of $f:"; tail -n 30 "$f" >&2; fi
    done
}

lock() {   # serialise start/stop/reset of the same state folder
    mkdir -p "$K"
    exec 9>"$K/.lock"
    if command -v flock >/dev/null && ! flock -w 180 9; then
        log "waited 180s for $K/.lock, going on without it"
    fi
}

# wait_for <what> <check> <pid>: 0 when check passes, 1 on timeout, 2 when the process died.
wait_for() {
    local what=$1 check=$2 pid=$3 end=$((SECONDS + KUBE_START_TIMEOUT))
    while ((SECONDS < end)); do
        $check && return 0
        kill -0 "$pid" 2>/dev/null || { log "$what exited during start-up"; return 2; }
        sleep 0.5
    done
    log "$what not ready after ${KUBE_START_TIMEOUT}s (KUBE_START_TIMEOUT)"
    return 1
}

start_etcd() {
    local pid
    if pid=$(etcd_pid); then
        wait_for etcd etcd_healthy "$pid" || { print_logs; exit 1; }
        return 0
    fi
    local port
    for port in "$KUBE_ETCD_PORT" "$KUBE_ETCD_PEER_PORT"; do
        if port_open "$port"; then
            log "port 127.0.0.1:$port is already in use by another process; cannot start etcd"
            exit 1
        fi
    done
    mkdir -p "$ETCD_DATA" "$LOGS"
    chmod 700 "$ETCD_DATA"
    # A test server: no fsync (the machine is shared and busy; losing it on a crash is fine).
    (exec setsid nohup "$BIN/etcd" --name logferry --data-dir "$ETCD_DATA" \
        --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
        --listen-peer-urls "http://127.0.0.1:$KUBE_ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$KUBE_ETCD_PEER_PORT" \
        --initial-cluster "logferry=http://127.0.0.1:$KUBE_ETCD_PEER_PORT" \
        --unsafe-no-fsync --log-level warn \
        </dev/null >>"$LOGS/etcd.log" 2>&1 8>&- 9>&-) &
    pid=$!
    echo "$pid" >"$K/etcd.pid"
    wait_for etcd etcd_healthy "$pid" || { print_logs; exit 1; }
}

start_apiserver() {
    local pid
    if pid=$(api_pid); then
        wait_for kube-apiserver api_ready "$pid" || { print_logs; exit 1; }
        return 0
    fi
    if port_open "$KUBE_API_PORT"; then
        log "port 127.0.0.1:$KUBE_API_PORT is already in use by another process; cannot start kube-apiserver"
        exit 1
    fi
    mkdir -p "$LOGS"
    (exec setsid nohup "$BIN/kube-apiserver" \
        --etcd-servers "$ETCD_URL" \
        --bind-address 127.0.0.1 --secure-port "$KUBE_API_PORT" \
        --tls-cert-file "$PKI/serving.crt" --tls-private-key-file "$PKI/serving.key" \
        --token-auth-file "$PKI/tokens.csv" \
        --authorization-mode RBAC \
        --enable-admission-plugins NodeRestriction \
        --service-account-key-file "$PKI/sa.pub" \
        --service-account-signing-key-file "$PKI/sa.key" \
        --service-account-issuer https://kubernetes.default.svc \
        --service-cluster-ip-range 10.96.0.0/16 \
        --audit-policy-file "$K/audit-policy.yaml" --audit-log-path "$LOGS/audit.log" \
        --audit-log-maxsize 200 --audit-log-maxbackup 1 \
        --profiling=false \
        </dev/null >>"$LOGS/kube-apiserver.log" 2>&1 8>&- 9>&-) &
    pid=$!
    echo "$pid" >"$K/apiserver.pid"
    wait_for kube-apiserver api_ready "$pid" || { print_logs; exit 1; }
}

cmd_start() {
    lock
    if ! command -v openssl >/dev/null || ! command -v curl >/dev/null; then
        log "openssl and curl are needed to start the Kubernetes API server"; exit 3
    fi
    wait_build
    local t0=$SECONDS
    make_pki
    start_etcd
    start_apiserver
    log "etcd and kube-apiserver ready in $((SECONDS - t0))s (logs: $LOGS)"
    print_lines
}

stop_one() {   # name pid
    local name=$1 pid=$2 i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    log "$name pid $pid still alive after 30s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
}

cmd_stop() {
    lock
    local pid
    if pid=$(api_pid); then stop_one kube-apiserver "$pid"; fi
    if pid=$(etcd_pid); then stop_one etcd "$pid"; fi
    rm -f "$K/apiserver.pid" "$K/etcd.pid"
    log "etcd and kube-apiserver stopped"
}

cmd_stop_apiserver() {   # for tests: the API server goes away while etcd stays up
    lock
    local pid
    if pid=$(api_pid); then stop_one kube-apiserver "$pid"; fi
    rm -f "$K/apiserver.pid"
}

cmd_status() {
    local pid
    if ! pid=$(etcd_pid) || ! etcd_healthy; then echo "kube: etcd not running" >&2; exit 1; fi
    if ! pid=$(api_pid) || ! api_ready; then echo "kube: kube-apiserver not running or not ready" >&2; exit 1; fi
    print_lines
}

cmd_reset() {
    cmd_stop
    rm -rf "$ETCD_DATA" "$PKI" "$LOGS" "$KUBECONFIG_FILE"
    log "etcd data, keys and logs deleted"
}

case "${1:-}" in
    fetch) cmd_fetch ;;
    fetch-background) cmd_fetch_background ;;
    fetch-worker) rc=0; cmd_fetch || rc=$?; echo "$rc" >"$K/build.status"; exit "$rc" ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    stop-apiserver) cmd_stop_apiserver ;;
    status) cmd_status ;;
    reset) cmd_reset ;;
    *) echo "usage: $0 {fetch|fetch-background|start|stop|stop-apiserver|status|reset}" >&2; exit 2 ;;
esac
