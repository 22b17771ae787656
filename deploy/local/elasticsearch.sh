#!/usr/bin/env bash
# Local single-node Elasticsearch for logferry's tests: a real Elasticsearch 8.19 node booted from the
# published server jars by the small launcher in deploy/local/elasticsearch/ (no Docker, no tarball).
#
#   deploy/local/elasticsearch.sh fetch    build the launcher and gather the jars into $STATE/elasticsearch/lib
#   deploy/local/elasticsearch.sh start    fetch if needed, start in the background, wait until healthy;
#                                          prints ELASTICSEARCH_URL=http://127.0.0.1:$ES_PORT
#   deploy/local/elasticsearch.sh stop     SIGTERM, up to 30 s, then SIGKILL
#   deploy/local/elasticsearch.sh status   exit 0 and print the URL line when running and healthy
#   deploy/local/elasticsearch.sh reset    stop and delete the data folder (keeps the jars)
#
# stdout carries only the ELASTICSEARCH_URL=... line, so this works:
#   eval "export $(deploy/local/elasticsearch.sh start)"
# Exit codes: 0 ok, 1 failure (build failed, node died, start timeout, port taken...),
#             3 start impossible because java or mvn (or the jars) are missing; fetch exits 0 then.
# Health is GET /_cluster/health; the launcher also serves GET / and HEAD / (elasticsearch-py info()/ping()).
#
# Environment:
#   LOGFERRY_SERVICES_DIR  folder (default: <repo>/.state); everything lives in $STATE/elasticsearch
#   ES_PORT             HTTP port (default 19200)          ES_TRANSPORT_PORT  transport port (default 19300)
#   ES_HEAP             max heap, e.g. 1g (default 1g)     ES_HEAP_MIN        initial heap (default 512m, capped at ES_HEAP)
#   ES_JAVA_OPTS        extra JVM options                  ES_START_TIMEOUT   seconds to wait for health (default 120)
#   JAVA_HOME           JDK to use (default /usr/lib/jvm/java-17-openjdk-amd64 when unset)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
PROJECT_DIR=$SCRIPT_DIR/elasticsearch
STATE=${LOGFERRY_SERVICES_DIR:-$REPO_ROOT/.state}
ES_DIR=$STATE/elasticsearch
LIB_DIR=$ES_DIR/lib
LOG_DIR=$ES_DIR/logs
LOG_FILE=$LOG_DIR/elasticsearch.log
PID_FILE=$ES_DIR/pid
FINGERPRINT_FILE=$LIB_DIR/.fingerprint
ES_PORT=${ES_PORT:-19200}
ES_TRANSPORT_PORT=${ES_TRANSPORT_PORT:-19300}
ES_HEAP=${ES_HEAP:-1g}
ES_START_TIMEOUT=${ES_START_TIMEOUT:-120}
ES_URL="http://127.0.0.1:$ES_PORT"
LAUNCHER_CLASS=dev.logferry.eslocal.Launcher
LAUNCHER_JAR=logferry-es-local.jar

if [[ -z "${JAVA_HOME:-}" && -x /usr/lib/jvm/java-17-openjdk-amd64/bin/java ]]; then
    export JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64
fi

say() { echo "elasticsearch: $*" >&2; }

# Serialises start/stop/reset (e.g. parallel test workers all calling start).
take_lock() {
    mkdir -p "$ES_DIR"
    exec 9>"$ES_DIR/.lock"
    if ! flock -w 300 9; then
        say "could not take $ES_DIR/.lock within 300s"
        exit 1
    fi
}

java_bin() {
    if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
        echo "$JAVA_HOME/bin/java"
    else
        command -v java || true
    fi
}

# Major version of the JDK, read from its release file (no JVM start-up), else from `java -version`.
java_major() {
    local java=$1 release version
    release=$(dirname "$(dirname "$(readlink -f "$java")")")/release
    if [[ -f "$release" ]]; then
        version=$(sed -n 's/^JAVA_VERSION="\([^"]*\)".*/\1/p' "$release")
    else
        version=$("$java" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n1)
    fi
    version=${version#1.}
    echo "${version%%[.+-]*}"
}

# Checksum of everything the lib folder is built from.
fingerprint() {
    (
        cd "$PROJECT_DIR"
        find pom.xml src -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    ) | sha256sum | cut -d' ' -f1
}

lib_is_current() {
    [[ -f "$FINGERPRINT_FILE" && -f "$LIB_DIR/$LAUNCHER_JAR" ]] && [[ "$(cat "$FINGERPRINT_FILE")" == "$(fingerprint)" ]]
}

# Returns 0 when the jars are in place (fetched now or before), 2 when java or mvn is missing, 1 on a build failure.
do_fetch() {
    if lib_is_current; then
        return 0
    fi
    local java
    java=$(java_bin)
    if [[ -z "$java" ]]; then
        say "java not found (set JAVA_HOME or install a JDK 17); not fetching"
        return 2
    fi
    if ! command -v mvn >/dev/null 2>&1; then
        say "mvn not found (install Maven); not fetching"
        return 2
    fi
    mkdir -p "$ES_DIR"
    local build_dir=$ES_DIR/build staging=$ES_DIR/lib.new build_log=$ES_DIR/build.log
    rm -rf "$staging"
    say "building the launcher and gathering jars into $LIB_DIR (log: $build_log)"
    if ! mvn -q -B -f "$PROJECT_DIR/pom.xml" \
        "-Dlogferry.build.dir=$build_dir" \
        "-DoutputDirectory=$staging" \
        package dependency:copy-dependencies >"$build_log" 2>&1; then
        say "maven build failed; last lines of $build_log:"
        tail -n 40 "$build_log" >&2
        return 1
    fi
    cp "$build_dir/$LAUNCHER_JAR" "$staging/"
    fingerprint >"$staging/.fingerprint"
    rm -rf "$LIB_DIR"
    mv "$staging" "$LIB_DIR"
    return 0
}

running_pid() {
    local pid cmdline
    [[ -f "$PID_FILE" ]] || return 1
    pid=$(cat "$PID_FILE" 2>/dev/null || true)
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # a recycled pid that is not our launcher does not count
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
    [[ "$cmdline" == *"$LAUNCHER_CLASS"* ]] || return 1
    echo "$pid"
}

# 0 when the cluster is at least yellow; waits up to $1 seconds server-side.
healthy() {
    local wait=${1:-1} code
    code=$(curl -s --noproxy '*' -o /dev/null -w '%{http_code}' --max-time $((wait + 5)) \
        "$ES_URL/_cluster/health?wait_for_status=yellow&timeout=${wait}s" 2>/dev/null) || true
    [[ "$code" == "200" ]]
}

# Bytes from a JVM size (512m, 1g, 1048576k ...), for comparing ES_HEAP_MIN and ES_HEAP.
size_bytes() {
    local v=${1,,} n
    n=${v%[kmgt]}
    case "$v" in
        *k) echo $((n * 1024)) ;;
        *m) echo $((n * 1024 * 1024)) ;;
        *g) echo $((n * 1024 * 1024 * 1024)) ;;
        *t) echo $((n * 1024 * 1024 * 1024 * 1024)) ;;
        *) echo "$n" ;;
    esac
}

do_start() {
    local pid
    if pid=$(running_pid); then
        if healthy 1; then
            echo "ELASTICSEARCH_URL=$ES_URL"
            return 0
        fi
        say "already running (pid $pid) but not healthy yet; waiting"
    else
        rm -f "$PID_FILE"
        if curl -s --noproxy '*' -o /dev/null --max-time 2 "$ES_URL/" 2>/dev/null; then
            say "port $ES_PORT is already answering HTTP but not from a node started with state $ES_DIR; not starting"
            return 1
        fi
        local rc=0
        do_fetch || rc=$?
        if [[ $rc -ne 0 ]]; then
            if [[ $rc -eq 2 ]]; then
                say "cannot start without java and mvn"
                return 3
            fi
            return 1
        fi
        local java major heap_min locale_providers
        java=$(java_bin)
        if [[ -z "$java" ]]; then
            say "java not found (set JAVA_HOME or install a JDK 17); not starting"
            return 3
        fi
        major=$(java_major "$java")
        heap_min=${ES_HEAP_MIN:-512m}
        if (($(size_bytes "$heap_min") > $(size_bytes "$ES_HEAP"))); then
            heap_min=$ES_HEAP
        fi
        # what Elasticsearch 8.x's launcher picks: SPI for its ISO calendar data, COMPAT (removed in JDK 23) before that
        if ((major >= 23)); then locale_providers=CLDR; else locale_providers=SPI,COMPAT; fi
        local -a jvm_opts=(
            "-Xms$heap_min" "-Xmx$ES_HEAP" -Xss1m
            -XX:+UseG1GC -XX:-OmitStackTraceInFastThrow
            "-XX:ErrorFile=$LOG_DIR/hs_err_pid%p.log"
            -Djava.awt.headless=true -Dfile.encoding=UTF-8
            "-Djava.io.tmpdir=$ES_DIR/tmp" -Djna.nosys=true
            -Des.networkaddress.cache.ttl=60 -Des.networkaddress.cache.negative.ttl=10
            -Dio.netty.noUnsafe=true -Dio.netty.noKeySetOptimization=true -Dio.netty.recycler.maxCapacityPerThread=0
            -Dlog4j.shutdownHookEnabled=false -Dlog4j2.disable.jmx=true -Dlog4j2.formatMsgNoLookups=true
            "-Djava.locale.providers=$locale_providers"
        )
        if ((major >= 21)); then
            jvm_opts+=(--enable-native-access=ALL-UNNAMED)
        fi
        if [[ -n "${ES_JAVA_OPTS:-}" ]]; then
            # shellcheck disable=SC2206 # word splitting of user-supplied options is intended
            jvm_opts+=($ES_JAVA_OPTS)
        fi
        mkdir -p "$LOG_DIR" "$ES_DIR/tmp"
        [[ -f "$LOG_FILE" ]] && mv -f "$LOG_FILE" "$LOG_FILE.1"
        (
            cd "$ES_DIR"
            exec 9>&- # do not hand the start/stop lock to the node
            # setsid: own session, so the node outlives the caller's terminal and process group
            exec setsid "$java" "${jvm_opts[@]}" -cp "$LIB_DIR/*" "$LAUNCHER_CLASS" \
                --home "$ES_DIR" --http-port "$ES_PORT" --transport-port "$ES_TRANSPORT_PORT" \
                </dev/null >"$LOG_FILE" 2>&1
        ) &
        pid=$!
        echo "$pid" >"$PID_FILE"
    fi

    local deadline=$((SECONDS + ES_START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            say "the node exited during start-up; last lines of $LOG_FILE:"
            tail -n 40 "$LOG_FILE" >&2 || true
            rm -f "$PID_FILE"
            return 1
        fi
        if healthy 2; then
            echo "ELASTICSEARCH_URL=$ES_URL"
            return 0
        fi
        sleep 0.5
    done
    say "not healthy after ${ES_START_TIMEOUT}s (pid $pid, still running); last lines of $LOG_FILE:"
    tail -n 40 "$LOG_FILE" >&2 || true
    return 1
}

do_stop() {
    local pid
    if ! pid=$(running_pid); then
        rm -f "$PID_FILE"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 60; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "pid $pid did not stop within 30s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 20; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
    fi
    rm -f "$PID_FILE"
}

do_status() {
    local pid
    if ! pid=$(running_pid); then
        say "not running"
        return 1
    fi
    if healthy 1; then
        echo "ELASTICSEARCH_URL=$ES_URL"
        return 0
    fi
    say "running (pid $pid) but not healthy"
    return 1
}

do_reset() {
    do_stop
    rm -rf "$ES_DIR/data"
}

case "${1:-}" in
    fetch)
        lib_is_current && exit 0
        take_lock
        rc=0
        do_fetch || rc=$?
        # a missing java or mvn is not an error for fetch
        [[ $rc -eq 2 ]] && rc=0
        exit "$rc"
        ;;
    start)
        take_lock
        do_start
        ;;
    stop)
        take_lock
        do_stop
        ;;
    status) do_status ;;
    reset)
        take_lock
        do_reset
        ;;
    *)
        echo "usage: $0 {fetch|start|stop|status|reset}" >&2
        exit 2
        ;;
esac
