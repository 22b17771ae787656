#!/usr/bin/env bash
# Local single-node search server for logferry's tests, booted from the published server jars by a small
# launcher (no Docker, no tarball). SEARCH picks which (default elasticsearch8):
#   elasticsearch8   Elasticsearch 8.19  launcher deploy/local/elasticsearch/   state $STATE/elasticsearch    port 19200
#   elasticsearch9   Elasticsearch 9.5   launcher deploy/local/elasticsearch9/  state $STATE/elasticsearch9   port 19201
#   opensearch       OpenSearch 2.19     launcher deploy/local/opensearch/      state $STATE/opensearch       port 19202
# Each kind has its own state folder and default ports, so they can run side by side.
#
#   deploy/local/elasticsearch.sh fetch    build the launcher and gather the jars into $STATE/<kind>/lib
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
# Health is GET /_cluster/health; every kind answers GET / and HEAD / (elasticsearch-py info()/ping()).
#
# Environment:
#   SEARCH              elasticsearch8 (default), elasticsearch9 or opensearch
#   LOGFERRY_SERVICES_DIR  folder (default: <repo>/.state); everything lives in $STATE/<kind> (see above)
#   ES_PORT             HTTP port (default per kind, above) ES_TRANSPORT_PORT  transport port (default 19300, 19301, 19302)
#   ES_HEAP             max heap, e.g. 1g (default 1g)     ES_HEAP_MIN        initial heap (default 512m, capped at ES_HEAP)
#   ES_JAVA_OPTS        extra JVM options                  ES_START_TIMEOUT   seconds to wait for health (default 120)
#   JAVA_HOME           JDK to use (default /usr/lib/jvm/java-17-openjdk-amd64 when unset); a kind that needs a newer
#                       Java than JAVA_HOME's (elasticsearch9: 21) takes the newest JDK of /usr/lib/jvm instead
#   SEARCH_JAVA_HOME    JDK to use for this kind, whatever JAVA_HOME says
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
SEARCH=${SEARCH:-elasticsearch8}
# KIND: state folder and log name; PROJECT_DIR: the launcher's build; JAVA_MIN: oldest Java the server runs on
case "$SEARCH" in
    elasticsearch8)
        KIND=elasticsearch PROJECT_DIR=$SCRIPT_DIR/elasticsearch DEFAULT_PORT=19200 JAVA_MIN=17
        LAUNCHER_CLASS=dev.logferry.eslocal.Launcher LAUNCHER_JAR=logferry-es-local.jar
        ;;
    elasticsearch9)
        KIND=elasticsearch9 PROJECT_DIR=$SCRIPT_DIR/elasticsearch9 DEFAULT_PORT=19201 JAVA_MIN=21
        LAUNCHER_CLASS=dev.logferry.eslocal.Launcher LAUNCHER_JAR=logferry-es9-local.jar
        ;;
    opensearch)
        KIND=opensearch PROJECT_DIR=$SCRIPT_DIR/opensearch DEFAULT_PORT=19202 JAVA_MIN=17
        LAUNCHER_CLASS=dev.logferry.oslocal.Launcher LAUNCHER_JAR=logferry-os-local.jar
        ;;
    *)
        echo "elasticsearch.sh: SEARCH must be elasticsearch8, elasticsearch9 or opensearch, not '$SEARCH'" >&2
        exit 2
        ;;
esac
STATE=${LOGFERRY_SERVICES_DIR:-$REPO_ROOT/.state}
ES_DIR=$STATE/$KIND
LIB_DIR=$ES_DIR/lib
LOG_DIR=$ES_DIR/logs
LOG_FILE=$LOG_DIR/$KIND.log
PID_FILE=$ES_DIR/pid
FINGERPRINT_FILE=$LIB_DIR/.fingerprint
ES_PORT=${ES_PORT:-$DEFAULT_PORT}
ES_TRANSPORT_PORT=${ES_TRANSPORT_PORT:-$((DEFAULT_PORT + 100))}
ES_HEAP=${ES_HEAP:-1g}
ES_START_TIMEOUT=${ES_START_TIMEOUT:-120}
ES_URL="http://127.0.0.1:$ES_PORT"

if [[ -n "${SEARCH_JAVA_HOME:-}" ]]; then
    export JAVA_HOME=$SEARCH_JAVA_HOME
elif [[ -z "${JAVA_HOME:-}" && -x /usr/lib/jvm/java-17-openjdk-amd64/bin/java ]]; then
    export JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64
fi

say() { echo "$KIND: $*" >&2; }

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

# A JDK of at least JAVA_MIN when JAVA_HOME's (or the PATH's) is older or missing and SEARCH_JAVA_HOME is unset:
# the newest in /usr/lib/jvm.
java=$(java_bin)
if [[ -z "${SEARCH_JAVA_HOME:-}" ]] && { [[ -z "$java" ]] || (($(java_major "$java") < JAVA_MIN)); }; then
    newest=
    for candidate in /usr/lib/jvm/*/bin/java; do
        [[ -x "$candidate" ]] || continue
        if [[ -z "$newest" ]] || (($(java_major "$candidate") > $(java_major "$newest"))); then
            newest=$candidate
        fi
    done
    if [[ -n "$newest" ]] && (($(java_major "$newest") >= JAVA_MIN)); then
        JAVA_HOME=$(dirname "$(dirname "$newest")")
        export JAVA_HOME
    fi
fi

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
    if [[ -z "$java" ]] || (($(java_major "$java") < JAVA_MIN)); then
        say "no Java $JAVA_MIN or newer found (set SEARCH_JAVA_HOME or JAVA_HOME, or install a JDK $JAVA_MIN); not fetching"
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
        if [[ -z "$java" ]] || (($(java_major "$java") < JAVA_MIN)); then
            say "no Java $JAVA_MIN or newer found (set SEARCH_JAVA_HOME or JAVA_HOME, or install a JDK $JAVA_MIN); not starting"
            return 3
        fi
        major=$(java_major "$java")
        heap_min=${ES_HEAP_MIN:-512m}
        if (($(size_bytes "$heap_min") > $(size_bytes "$ES_HEAP"))); then
            heap_min=$ES_HEAP
        fi
        # what Elasticsearch 8.x's launcher picks: SPI for its ISO calendar data, COMPAT (removed in JDK 23) before that;
        # Elasticsearch 9 always runs on CLDR
        if ((major >= 23)) || [[ "$SEARCH" == elasticsearch9 ]]; then locale_providers=CLDR; else locale_providers=SPI,COMPAT; fi
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
        if [[ "$SEARCH" == elasticsearch9 ]]; then
            # Elasticsearch 9 reaches libc and zstd (the best_compression codec, which logsdb uses) through
            # Java's foreign function API, loading zstd from its distribution's lib/platform folder: without
            # one, its native access is off and flushing such an index fails. The system's libzstd stands in;
            # the SIMD vector library has no such stand-in and is turned off.
            local native_dir=$ES_DIR/native zstd
            mkdir -p "$native_dir"
            zstd=$(ldconfig -p 2>/dev/null | sed -n 's/^[[:space:]]*libzstd\.so\.1 (.*) => //p' | head -n1 || true)
            if [[ -n "$zstd" ]]; then
                ln -sfn "$zstd" "$native_dir/libzstd.so"
            else
                say "no libzstd.so.1 found by ldconfig: indices with index.codec best_compression will fail to flush"
            fi
            jvm_opts+=("-Des.nativelibs.path=$native_dir" -Dorg.elasticsearch.nativeaccess.enableVectorLibrary=false)
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
