#!/usr/bin/env bash
# Build logferry's images (deploy/docker/*.Dockerfile) on the local Docker engine of
# deploy/local/docker.sh, where no image registry is reachable: the Dockerfiles' base (build
# argument PYTHON_IMAGE, default the official python image a user pulls) becomes
# logferry/python:bookworm, made from the Debian base by deploy/local/docker/python-base.Dockerfile
# with a wheelhouse of the project's dependencies that the host's pip downloads.
#
#   deploy/local/images.sh build    build both images; prints LOGFERRY_COLLECTOR_IMAGE=... and
#                                   LOGFERRY_PIPELINE_IMAGE=... lines, and their sizes on stderr
#
# The engine's classic builder is used (BuildKit would fetch the Dockerfile frontend named by
# `# syntax=` from a registry), so the build context is assembled under $STATE/docker/context-*
# from what each <Dockerfile>.dockerignore lets through.
#
# Environment:
#   LOGFERRY_SERVICES_DIR  folder (default <repo>/.state), as for deploy/local/docker.sh
#   PYTHON                 the host's Python 3.11 with pip (default .venv/bin/python, else python3)
#   LOGFERRY_IMAGE_TAG     tag of the images (default the project's version)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
STATE=${LOGFERRY_SERVICES_DIR:-$REPO_ROOT/.state}
D="$STATE/docker"
PYTHON=${PYTHON:-}
if [[ -z "$PYTHON" ]]; then
    if [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then PYTHON="$REPO_ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
TAG=${LOGFERRY_IMAGE_TAG:-$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO_ROOT/pyproject.toml")}
PYTHON_BASE=logferry/python:bookworm

log() { echo "images.sh: $*" >&2; }

if [[ "${1:-}" != build ]]; then echo "usage: $0 build" >&2; exit 2; fi
eval "export $("$SCRIPT_DIR/docker.sh" start)"
base_line=$("$SCRIPT_DIR/docker.sh" base)
BASE=${base_line#LOGFERRY_BASE_IMAGE=}
# As in docker.sh: the client on PATH if it talks to this engine, else Debian's own.
CLI=$(command -v docker || echo /usr/bin/docker)
"$CLI" version >/dev/null 2>&1 || CLI=/usr/bin/docker
docker_() { DOCKER_BUILDKIT=0 "$CLI" "$@"; }

# The wheelhouse and the python base follow pyproject.toml and python-base.Dockerfile: both
# are made again when either changes.
wheelhouse() {
    local wh="$D/wheelhouse" sum
    sum=$(cat "$REPO_ROOT/pyproject.toml" "$SCRIPT_DIR/docker/python-base.Dockerfile" | sha256sum | cut -d' ' -f1)
    if [[ -f "$wh/.sources.sha256" && "$(cat "$wh/.sources.sha256")" == "$sum" ]]; then
        return 0
    fi
    log "downloading the project's dependencies as wheels into $wh"
    rm -rf "$wh"; mkdir -p "$wh"
    # The dependencies of pyproject.toml and its build backend, not the project itself: a
    # build here would leave build/ in the checkout, and the images build their own wheel.
    "$PYTHON" - "$REPO_ROOT/pyproject.toml" >"$D/requirements.txt" <<'PY'
import sys
import tomllib

with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)
print("\n".join(project["build-system"]["requires"] + project["project"]["dependencies"]))
PY
    if ! "$PYTHON" -m pip wheel -q --wheel-dir "$wh" -r "$D/requirements.txt" \
            >"$D/wheelhouse.log" 2>&1; then
        log "pip wheel failed; last lines of $D/wheelhouse.log:"; tail -n 30 "$D/wheelhouse.log" >&2
        exit 1
    fi
    echo "$sum" >"$wh/.sources.sha256"
    docker_ image rm "$PYTHON_BASE" >/dev/null 2>&1 || true
}

python_base() {
    wheelhouse
    docker_ image inspect "$PYTHON_BASE" >/dev/null 2>&1 && return 0
    log "building $PYTHON_BASE (apt-get inside needs the host's network)"
    docker_ build --network host --build-arg "BASE=$BASE" -t "$PYTHON_BASE" \
        -f "$SCRIPT_DIR/docker/python-base.Dockerfile" "$D/wheelhouse" >"$D/python-base.log" 2>&1 || {
        log "building $PYTHON_BASE failed; last lines of $D/python-base.log:"
        tail -n 30 "$D/python-base.log" >&2; exit 1; }
}

# context <name>: the repository files <name>.Dockerfile.dockerignore lets through
# (it is of the form `*`, then `!path` lines, then exclusions of caches).
context() {
    local name=$1 ctx="$D/context-$1" path
    rm -rf "$ctx"; mkdir -p "$ctx"
    while read -r path; do
        cp -r "$REPO_ROOT/$path" "$ctx/$path"
    done < <(sed -n 's|^!\(.*[^/]\)/\{0,1\}$|\1|p' "$REPO_ROOT/deploy/docker/$name.Dockerfile.dockerignore")
    find "$ctx" \( -name __pycache__ -o -name '*.pyc' \) -prune -exec rm -rf {} +
    echo "$ctx"
}

python_base
for name in collector pipeline; do
    image="logferry/$name:$TAG"
    t0=$SECONDS
    ctx=$(context "$name")
    if ! docker_ build --network none --build-arg "PYTHON_IMAGE=$PYTHON_BASE" -t "$image" \
            -f "$REPO_ROOT/deploy/docker/$name.Dockerfile" "$ctx" >"$D/build-$name.log" 2>&1; then
        log "building $image failed; last lines of $D/build-$name.log:"
        tail -n 30 "$D/build-$name.log" >&2; exit 1
    fi
    size=$(docker_ image inspect -f '{{.Size}}' "$image")
    log "$image built in $((SECONDS - t0))s, $((size / 1000000)) MB"
    echo "LOGFERRY_$(tr '[:lower:]' '[:upper:]' <<<"$name")_IMAGE=$image"
done
