#!/usr/bin/env bash
# Local podman for logferry's tests: conmon's k8s-file log driver writes the CRI log format
# (what CRI-O and containerd write for the kubelet), so real containers give real CRI files.
# Podman needs no daemon; this script installs it and runs it with its own storage under
# $STATE/podman, so it never touches /var/lib/containers.
#
#   deploy/local/podman.sh fetch      install Debian's podman when missing (as root, with
#                                     apt-get); says why in one line and exits 0 if not
#   deploy/local/podman.sh base       fetch, then make sure the Debian base image of
#                                     deploy/local/docker.sh (same mmdebstrap tarball) is in
#                                     podman's storage; prints LOGFERRY_BASE_IMAGE=<name>
#   deploy/local/podman.sh run ARGS   `podman ARGS` with this storage and settings, e.g.
#                                     deploy/local/podman.sh run ps -a
#   deploy/local/podman.sh reset      remove every container and image of this storage
#
# Exit codes: 0 ok, 1 failure, 3 podman missing and not installable here (not root, no apt-get).
#
# Environment:
#   LOGFERRY_SERVICES_DIR  folder (default <repo>/.state); all goes to $STATE/podman
#   LOGFERRY_BASE_IMAGE    name of the base image (default localhost/logferry/base:bookworm)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
STATE=${LOGFERRY_SERVICES_DIR:-$REPO_ROOT/.state}
P="$STATE/podman"
BASE_IMAGE=${LOGFERRY_BASE_IMAGE:-localhost/logferry/base:bookworm}
export CONTAINERS_CONF="$SCRIPT_DIR/podman/containers.conf"

log() { echo "podman.sh: $*" >&2; }

cmd_fetch() {
    command -v podman >/dev/null && return 0
    if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
        log "podman missing and not installable here (needs root and apt-get); skipped"
        return 0
    fi
    mkdir -p "$P"
    log "installing podman from Debian with apt-get"
    if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman; } \
            >"$P/apt.log" 2>&1; then
        log "apt-get failed; last lines of $P/apt.log:"
        tail -n 30 "$P/apt.log" >&2
        return 1
    fi
}

podman_here() {
    mkdir -p "$P"
    podman --root "$P/root" --runroot "$P/run" --tmpdir "$P/tmp" --storage-driver overlay "$@"
}

lock() {   # serialise base/reset of the same storage
    mkdir -p "$P"
    exec 9>"$P/.lock"
    if command -v flock >/dev/null && ! flock -w 300 9; then
        log "waited 300s for $P/.lock, going on without it"
    fi
}

need_podman() {
    cmd_fetch
    command -v podman >/dev/null && return 0
    log "podman not found and not installable here"; exit 3
}

cmd_base() {
    need_podman
    lock
    if (podman_here image exists "$BASE_IMAGE") 9>&-; then
        echo "LOGFERRY_BASE_IMAGE=$BASE_IMAGE"; return 0
    fi
    local line tar
    line=$("$SCRIPT_DIR/docker.sh" base-tar 9>&-)
    tar=${line#LOGFERRY_BASE_TAR=}
    if ! (podman_here import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["/bin/bash"]' "$tar" "$BASE_IMAGE") >"$P/import.log" 2>&1 9>&-; then
        log "podman import of $tar failed:"; tail -n 20 "$P/import.log" >&2; exit 1
    fi
    log "imported $BASE_IMAGE"
    echo "LOGFERRY_BASE_IMAGE=$BASE_IMAGE"
}

cmd_reset() {
    command -v podman >/dev/null || return 0
    lock
    (podman_here rm --all --force >/dev/null) 9>&- || true
    (podman_here system reset --force >/dev/null) 9>&- || true
    log "podman storage in $P reset"
}

case "${1:-}" in
    fetch) cmd_fetch ;;
    base) cmd_base ;;
    run) shift; need_podman; podman_here "$@" ;;
    reset) cmd_reset ;;
    *) echo "usage: $0 {fetch|base|run ARGS...|reset}" >&2; exit 2 ;;
esac
