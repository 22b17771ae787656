#!/usr/bin/env bash
# Local Docker engine for logferry's tests: Debian's dockerd started by hand (no systemd),
# with its own data root, exec root and socket under $STATE/docker, so it never touches a
# system engine at /var/run/docker.sock or /var/lib/docker, and two checkouts can each run one.
#
#   deploy/local/docker.sh fetch    install Debian's docker.io, mmdebstrap and docker-compose (when
#                                   there is no `docker compose`) when missing (as
#                                   root, with apt-get); says why in one line and exits 0 if not
#   deploy/local/docker.sh start    fetch, start dockerd in the background, wait until it answers;
#                                   prints DOCKER_HOST=unix://$STATE/docker/docker.sock
#   deploy/local/docker.sh status   exit 0 + the same line if running and answering, else exit 1
#   deploy/local/docker.sh stop     SIGTERM (containers are stopped by dockerd), up to 60 s,
#                                   then SIGKILL (idempotent)
#   deploy/local/docker.sh base     start, then make sure the base image exists in the engine:
#                                   a Debian bookworm minbase with python3 and ca-certificates,
#                                   built by mmdebstrap from Debian packages (no registry needed),
#                                   cached as $STATE/docker/base-bookworm.tar, loaded with
#                                   `docker import`; prints LOGFERRY_BASE_IMAGE=<name>
#   deploy/local/docker.sh base-tar only build (or find) that tarball; prints
#                                   LOGFERRY_BASE_TAR=<path> (deploy/local/podman.sh imports it)
#   deploy/local/docker.sh jvm-base the same for a JVM base: bookworm minbase with
#                                   openjdk-17-jre-headless, ca-certificates and curl, cached as
#                                   $STATE/docker/jvm-bookworm.tar; prints LOGFERRY_JVM_IMAGE=<name>
#                                   (deploy/local/server-images.sh builds Kafka and ES on it)
#   deploy/local/docker.sh reset    stop and delete the data root (keeps the base tarball)
#
# stdout carries only the NAME=value line, so this works:
#   eval "export $(deploy/local/docker.sh start)"
# The engine's data root (json-file logs in <root>/containers/<id>/<id>-json.log) is
# $DOCKER_DATA_ROOT; `docker info --format '{{.DockerRootDir}}'` says it too.
# Exit codes: 0 ok, 1 failure (start timeout, daemon died, build failed...),
#             3 start impossible: dockerd missing and not installable here (not root, no apt-get).
#
# Environment:
#   LOGFERRY_SERVICES_DIR  folder (default <repo>/.state); all goes to $STATE/docker
#   DOCKER_DATA_ROOT       --data-root (default $STATE/docker/data)
#   DOCKER_EXEC_ROOT       --exec-root (default $STATE/docker/run; containerd's sockets live
#                          there, so keep the path short: unix socket paths end at 107 bytes)
#   DOCKER_SOCKET          the API socket (default $STATE/docker/docker.sock)
#   DOCKERD_OPTS           extra dockerd flags
#   DOCKER_START_TIMEOUT   seconds to wait for the API (default 60)
#   LOGFERRY_BASE_IMAGE    name of the base image (default logferry/base:bookworm)
#   LOGFERRY_JVM_IMAGE     name of the JVM base image (default logferry/jvm:bookworm)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
STATE=${LOGFERRY_SERVICES_DIR:-$REPO_ROOT/.state}
D="$STATE/docker"
DATA_ROOT=${DOCKER_DATA_ROOT:-$D/data}
EXEC_ROOT=${DOCKER_EXEC_ROOT:-$D/run}
SOCKET=${DOCKER_SOCKET:-$D/docker.sock}
DOCKERD_OPTS=${DOCKERD_OPTS:-}
DOCKER_START_TIMEOUT=${DOCKER_START_TIMEOUT:-60}
BASE_IMAGE=${LOGFERRY_BASE_IMAGE:-logferry/base:bookworm}
BASE_TAR="$D/base-bookworm.tar"
BASE_PACKAGES="python3,ca-certificates"
JVM_IMAGE=${LOGFERRY_JVM_IMAGE:-logferry/jvm:bookworm}
JVM_TAR="$D/jvm-bookworm.tar"
# curl: the servers' health checks (compose, testcontainers) ask their HTTP ports with it.
JVM_PACKAGES="openjdk-17-jre-headless,ca-certificates,curl"
PIDFILE="$D/dockerd.pid"
LOG="$D/dockerd.log"
HOST="unix://$SOCKET"

log() { echo "docker.sh: $*" >&2; }

DOCKERD=$(command -v dockerd || true)

cmd_fetch() {
    local want=()
    [[ -n "$(command -v dockerd || true)" ]] || want+=(docker.io)
    command -v mmdebstrap >/dev/null || want+=(mmdebstrap)
    # Compose for deploy/local/compose-demo.sh: v2 when the client has it, else Debian's 1.29.
    docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null ||
        want+=(docker-compose)
    ((${#want[@]})) || return 0
    if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
        log "${want[*]} missing and not installable here (needs root and apt-get); skipped"
        return 0
    fi
    log "installing ${want[*]} from Debian with apt-get"
    if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${want[@]}"; } \
            >"$D/apt.log" 2>&1; then
        log "apt-get failed; last lines of $D/apt.log:"
        tail -n 30 "$D/apt.log" >&2
        return 1
    fi
    DOCKERD=$(command -v dockerd || true)
}

# The newer client some machines carry in /usr/local/bin may refuse this 20.10 daemon; then
# Debian's own client, which always matches it.
docker_cli() {
    local cli
    for cli in "$(command -v docker || true)" /usr/bin/docker; do
        [[ -n "$cli" && -x "$cli" ]] || continue
        if DOCKER_HOST="$HOST" "$cli" version >/dev/null 2>&1; then echo "$cli"; return 0; fi
    done
    return 1
}

pid_alive() {   # prints the daemon's pid if the pid file names a live dockerd
    [[ -f "$PIDFILE" ]] || return 1
    local pid
    pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'dockerd' || return 1
    echo "$pid"
}

answers() { docker_cli >/dev/null; }

# wait_ready <timeout s> [pid]: 0 answering, 1 timeout, 2 daemon died.
wait_ready() {
    local timeout=$1 pid=${2:-} end=$((SECONDS + $1))
    while ((SECONDS < end)); do
        [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null && return 2
        answers && return 0
        sleep 0.3
    done
    return 1
}

print_logs() {
    [[ -s "$LOG" ]] && { log "last 30 lines of $LOG:"; tail -n 30 "$LOG" >&2; }
    return 0
}

lock() {   # serialise start/stop/base of the same state folder
    mkdir -p "$D"
    exec 9>"$D/.lock"
    if command -v flock >/dev/null && ! flock -w 300 9; then
        log "waited 300s for $D/.lock, going on without it"
    fi
}

cmd_start() {
    lock
    cmd_fetch
    if [[ -z "$DOCKERD" ]]; then log "dockerd not found and not installable here; cannot start"; exit 3; fi
    local pid rc=0 t0=$SECONDS
    if pid=$(pid_alive); then
        wait_ready "$DOCKER_START_TIMEOUT" "$pid" || rc=$?
        if ((rc == 0)); then echo "DOCKER_HOST=$HOST"; return 0; fi
        log "dockerd (pid $pid) is running but does not answer on $SOCKET"
        print_logs; exit 1
    fi
    rm -f "$PIDFILE" "$SOCKET"
    mkdir -p "$DATA_ROOT" "$EXEC_ROOT"
    # No systemd and no firewall rights here: no iptables, no default bridge (containers get
    # --network none, host or a user-defined network), cgroups driven directly; containers'
    # nofile limit kept within the hard limit these machines give (20000), since runc may not
    # raise it (EPERM at container start otherwise).
    # setsid: the daemon outlives the caller's session; fd 9 (our lock) is not inherited.
    # shellcheck disable=SC2086
    (cd "$D" && exec setsid nohup "$DOCKERD" \
        --iptables=false --ip-masq=false --bridge=none \
        --exec-opt native.cgroupdriver=cgroupfs --default-ulimit nofile=20000:20000 \
        --data-root "$DATA_ROOT" --exec-root "$EXEC_ROOT" --pidfile "$PIDFILE.dockerd" \
        -H "$HOST" $DOCKERD_OPTS \
        </dev/null >"$LOG" 2>&1 9>&-) &
    pid=$!
    echo "$pid" >"$PIDFILE"
    log "started dockerd pid $pid, waiting for $SOCKET (log: $LOG)"
    wait_ready "$DOCKER_START_TIMEOUT" "$pid" || rc=$?
    case $rc in
        0) log "dockerd answers after $((SECONDS - t0))s (data root $DATA_ROOT)"
           echo "DOCKER_HOST=$HOST" ;;
        2) log "dockerd exited during start-up"; rm -f "$PIDFILE"; print_logs; exit 1 ;;
        *) log "dockerd does not answer after ${DOCKER_START_TIMEOUT}s (still running, pid $pid)"
           print_logs; exit 1 ;;
    esac
}

# dockerd leaves the bind mount of its host network namespace (netns/default) behind when it
# stops: unmounted here, or `rm -rf .state` (make clean, reset) would trip over it.
release_mounts() {
    local _device mount _rest
    while read -r _device mount _rest; do
        if [[ "$mount" == "$EXEC_ROOT/"* ]]; then umount "$mount" 2>/dev/null || true; fi
    done </proc/mounts
}

cmd_stop() {
    lock
    local pid i
    if ! pid=$(pid_alive); then rm -f "$PIDFILE"; release_mounts; return 0; fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 600; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "dockerd pid $pid still alive after 60s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$PIDFILE"
    release_mounts
    log "dockerd stopped"
}

cmd_status() {
    local pid
    if ! pid=$(pid_alive); then echo "docker: not running" >&2; exit 1; fi
    if ! answers; then echo "docker: running (pid $pid) but not answering" >&2; exit 1; fi
    echo "DOCKER_HOST=$HOST"
}

# build_tar <tarball> <packages>: a bookworm minbase with those packages, rebuilt only when the
# package list changes (it is kept beside the tarball).
build_tar() {
    local tar=$1 packages=$2 new="${1%.tar}.new.tar"   # mmdebstrap picks the format from the name
    if [[ -s "$tar" && "$(cat "$tar.packages" 2>/dev/null)" == "$packages" ]]; then
        return 0
    fi
    if ! command -v mmdebstrap >/dev/null; then
        log "mmdebstrap not found (deploy/local/docker.sh fetch installs it as root); no base image"
        exit 3
    fi
    local t0=$SECONDS mlog="$D/mmdebstrap-$(basename "$tar" .tar).log"
    log "building $tar with mmdebstrap (a minute or a few, once)"
    if ! mmdebstrap --variant=minbase --include="$packages" bookworm "$new" \
            >"$mlog" 2>&1 </dev/null; then
        log "mmdebstrap failed; last lines of $mlog:"
        tail -n 30 "$mlog" >&2
        rm -f "$new"
        exit 1
    fi
    mv "$new" "$tar"
    echo "$packages" >"$tar.packages"
    log "$tar built in $((SECONDS - t0))s"
}

# import_image <tarball> <packages> <image> <NAME>: start, build the tarball if needed, import it
# unless the engine holds the image; prints NAME=<image>.
import_image() {
    local tar=$1 packages=$2 image=$3 name=$4
    cmd_start >/dev/null
    lock
    local cli
    cli=$(docker_cli) || { log "the engine stopped answering"; exit 1; }
    if DOCKER_HOST="$HOST" "$cli" image inspect "$image" >/dev/null 2>&1; then
        echo "$name=$image"; return 0
    fi
    build_tar "$tar" "$packages"
    if ! DOCKER_HOST="$HOST" "$cli" import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["/bin/bash"]' \
            "$tar" "$image" >/dev/null; then
        log "docker import of $tar failed"; exit 1
    fi
    log "imported $image"
    echo "$name=$image"
}

cmd_reset() {
    cmd_stop
    rm -rf "$DATA_ROOT" "$EXEC_ROOT" "$LOG"
    log "engine data deleted (kept the base tarballs)"
}

case "${1:-}" in
    fetch) mkdir -p "$D"; cmd_fetch ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    base) import_image "$BASE_TAR" "$BASE_PACKAGES" "$BASE_IMAGE" LOGFERRY_BASE_IMAGE ;;
    base-tar) lock; build_tar "$BASE_TAR" "$BASE_PACKAGES"; echo "LOGFERRY_BASE_TAR=$BASE_TAR" ;;
    jvm-base) import_image "$JVM_TAR" "$JVM_PACKAGES" "$JVM_IMAGE" LOGFERRY_JVM_IMAGE ;;
    reset) cmd_reset ;;
    *) echo "usage: $0 {fetch|start|stop|status|base|base-tar|jvm-base|reset}" >&2; exit 2 ;;
esac
