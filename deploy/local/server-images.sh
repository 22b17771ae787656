#!/usr/bin/env bash
# Build the Kafka and Elasticsearch images of deploy/local/docker/{kafka,elasticsearch}.Dockerfile
# on the local Docker engine of deploy/local/docker.sh, where no image registry is reachable:
# the same Maven jars the local servers run (deploy/local/kafka.sh and elasticsearch.sh fetch
# them into $STATE/kafka/lib and $STATE/elasticsearch/lib) on the JVM base (docker.sh jvm-base).
# The testcontainers variant of the end-to-end test and `make demo-compose` run them.
#
#   deploy/local/server-images.sh build   fetch the jars if needed, build what changed; prints
#                                         LOGFERRY_KAFKA_IMAGE=logferry/kafka:<version>-local and
#                                         LOGFERRY_ELASTICSEARCH_IMAGE=logferry/elasticsearch:<version>-local,
#                                         the time and size of each on stderr
#
# An image is built again only when its context changes (its sha256 is the image's label
# dev.logferry.context), so a second run takes seconds. Exit codes as docker.sh's: 3 when the
# engine, the JVM base or the jars (java and mvn) cannot be had here.
#
# Environment: LOGFERRY_SERVICES_DIR as for deploy/local/docker.sh.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
STATE=${LOGFERRY_SERVICES_DIR:-$REPO_ROOT/.state}
D="$STATE/docker"

log() { echo "server-images.sh: $*" >&2; }

if [[ "${1:-}" != build ]]; then echo "usage: $0 build" >&2; exit 2; fi
eval "export $("$SCRIPT_DIR/docker.sh" start)"
jvm_line=$("$SCRIPT_DIR/docker.sh" jvm-base)
JVM=${jvm_line#LOGFERRY_JVM_IMAGE=}
# As in docker.sh: the client on PATH if it talks to this engine, else Debian's own.
CLI=$(command -v docker || echo /usr/bin/docker)
"$CLI" version >/dev/null 2>&1 || CLI=/usr/bin/docker
docker_() { DOCKER_BUILDKIT=0 "$CLI" "$@"; }

"$SCRIPT_DIR/kafka.sh" fetch >&2
"$SCRIPT_DIR/elasticsearch.sh" fetch >&2

# build <name> <variable> <version> <lib> <files...>: context = lib/ + the files of docker/.
build() {
    local name=$1 variable=$2 version=$3 lib=$4
    shift 4
    local image="logferry/$name:$version-local" ctx="$D/context-$name" sum have t0=$SECONDS size f
    rm -rf "$ctx"; mkdir -p "$ctx"
    cp -r "$lib" "$ctx/lib"
    for f in "$name.Dockerfile" "$@"; do cp "$SCRIPT_DIR/docker/$f" "$ctx/"; done
    sum=$(cd "$ctx" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
    have=$(docker_ image inspect -f '{{index .Config.Labels "dev.logferry.context"}}' "$image" 2>/dev/null || true)
    if [[ "$have" != "$sum" ]]; then
        log "building $image"
        if ! docker_ build --network none --build-arg "BASE=$JVM" --label "dev.logferry.context=$sum" \
                -t "$image" -f "$ctx/$name.Dockerfile" "$ctx" >"$D/build-$name.log" 2>&1; then
            log "building $image failed; last lines of $D/build-$name.log:"
            tail -n 30 "$D/build-$name.log" >&2; exit 1
        fi
    fi
    rm -rf "$ctx"
    size=$(docker_ image inspect -f '{{.Size}}' "$image")
    log "$image ready in $((SECONDS - t0))s, $((size / 1000000)) MB"
    echo "$variable=$image"
}

# version_of <lib> <jar prefix>: the version in the name of <prefix><version>.jar
version_of() {
    local jar
    jar=$(compgen -G "$1/$2*.jar" | head -n1 || true)
    [[ -n "$jar" ]] || { log "no $2*.jar in $1 (java and mvn are needed to fetch it)"; exit 3; }
    jar=$(basename "$jar" .jar)
    echo "${jar#"$2"}"
}

build kafka LOGFERRY_KAFKA_IMAGE "$(version_of "$STATE/kafka/lib" kafka_2.13-)" \
    "$STATE/kafka/lib" kafka-run.sh kafka-log4j2.properties
build elasticsearch LOGFERRY_ELASTICSEARCH_IMAGE \
    "$(version_of "$STATE/elasticsearch/lib" elasticsearch-core-)" \
    "$STATE/elasticsearch/lib" elasticsearch-run.sh
