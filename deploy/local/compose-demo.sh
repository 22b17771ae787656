#!/usr/bin/env bash
# The compose demo (deploy/compose/docker-compose.yml) on the local Docker engine of
# deploy/local/docker.sh, where no image registry is reachable: Kafka and Elasticsearch from
# deploy/local/server-images.sh, the collector and the pipeline from deploy/local/images.sh,
# the sample apps on the python base that images.sh makes. Kibana (compose profile kibana)
# needs a registry and is left out. The collector reads this engine's data root.
#
#   deploy/local/compose-demo.sh up     build what is missing, start the stack, wait for it;
#                                       prints ELASTICSEARCH_URL=... and KAFKA_BOOTSTRAP_SERVERS=...
#   deploy/local/compose-demo.sh down   stop the stack and delete its volumes (idempotent)
#
# Compose: `docker compose` (v2) when the client has it, else Debian's docker-compose 1.29
# (docker.sh fetch installs it), which is given the file without its top-level `name:` (a
# Compose v2 key) and the project name on the command line.
#
# Environment:
#   LOGFERRY_SERVICES_DIR  as for deploy/local/docker.sh
#   DEMO_PROJECT           compose project name (default logferry-demo)
#   DEMO_KAFKA_PORT        host port of Kafka's HOST listener (default 29092)
#   DEMO_ES_PORT           host port of Elasticsearch (default 9200)
#   PYTHON                 as for deploy/local/images.sh
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
STATE=${LOGFERRY_SERVICES_DIR:-$REPO_ROOT/.state}
D="$STATE/docker"
COMPOSE_DIR="$REPO_ROOT/deploy/compose"
export DEMO_PROJECT=${DEMO_PROJECT:-logferry-demo}
export DEMO_KAFKA_PORT=${DEMO_KAFKA_PORT:-29092} DEMO_ES_PORT=${DEMO_ES_PORT:-9200}

log() { echo "compose-demo.sh: $*" >&2; }

if [[ "${1:-}" != up && "${1:-}" != down ]]; then echo "usage: $0 {up|down}" >&2; exit 2; fi
eval "export $("$SCRIPT_DIR/docker.sh" start)"
CLI=$(command -v docker || echo /usr/bin/docker)
"$CLI" version >/dev/null 2>&1 || CLI=/usr/bin/docker

compose() {
    if "$CLI" compose version >/dev/null 2>&1; then
        "$CLI" compose -p "$DEMO_PROJECT" -f "$COMPOSE_DIR/docker-compose.yml" "$@"
    elif command -v docker-compose >/dev/null; then
        local file="$D/compose-demo.yml"
        mkdir -p "$D"
        sed '/^name:/d' "$COMPOSE_DIR/docker-compose.yml" >"$file"
        docker-compose -p "$DEMO_PROJECT" --project-directory "$COMPOSE_DIR" -f "$file" "$@"
    else
        log "neither \`docker compose\` nor docker-compose found (deploy/local/docker.sh fetch installs it as root)"
        exit 3
    fi
}

# The variables of the compose file, also for `down` (which reads the file too).
export DOCKER_CONTAINERS_DIR
DOCKER_CONTAINERS_DIR="$("$CLI" info --format '{{.DockerRootDir}}')/containers"

if [[ "$1" == down ]]; then
    compose down -v --remove-orphans >&2
    exit 0
fi

t0=$SECONDS
while IFS='=' read -r name value; do
    [[ "$name" == LOGFERRY_*_IMAGE ]] && export "$name=$value"
done < <("$SCRIPT_DIR/server-images.sh" build; "$SCRIPT_DIR/images.sh" build)
export LOGFERRY_PYTHON_IMAGE=logferry/python:bookworm
log "images ready in $((SECONDS - t0))s; starting project $DEMO_PROJECT"
# --no-build: the images were just built by images.sh (the classic builder would send the
# whole checkout as context; the Dockerfiles' own .dockerignore files need BuildKit).
compose up -d --no-build >&2
log "up in $((SECONDS - t0))s"
echo "ELASTICSEARCH_URL=http://127.0.0.1:$DEMO_ES_PORT"
echo "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$DEMO_KAFKA_PORT"
