#!/usr/bin/env bash
# Local single-node search server for logferry's tests, booted from the published server jars by a small
# launcher (no Docker, no tarball). SEARCH picks which (default elasticsearch8):
#   elasticsearch8   Elasticsearch 8.19  launcher deploy/local/elasticsearch/   state $STATE/elasticsearch    port 19200
#   elasticsearch9   Elasticsearch 9.5   launcher deploy/local/elasticsearch/ -Pelasticsearch9  state $STATE/elasticsearch9   port 19201
#   opensearch       OpenSearch 2.19     launcher deploy/local/opensearch/      state $STATE/opensearch       port 19202
# Each kind has its own state folder and default ports, so they can run side by side.
#
#   deploy/local/elasticsearch.sh fetch    build the launcher and gather the jars into $STATE/<kind>/lib
#   deploy/local/elasticsearch.sh start    fetch if needed, start in the background, wait until healthy;
#                                          prints ELASTICSEARCH_URL=http://127.0.0.1:$ES_PORT
#   deploy/local/elasticsearch.sh stop     SIGTERM, up to 30 s, then SIGKILL
#   deploy/local/elasticsearch.sh status   exit 0 and print the URL line when running and healthy
#   deploy/local/elasticsearch.sh reset    stop and delete the data folder (keeps the jars)
# With ES_NODES=N (N > 1), a cluster of N nodes (all master-eligible data nodes) of that kind:
# the same commands act on every node, and these on node I (1..N) alone, for fault tests:
#   deploy/local/elasticsearch.sh stop-node I    SIGTERM, as stop
#   deploy/local/elasticsearch.sh kill-node I    SIGKILL, no waiting for anything but the exit
#   deploy/local/elasticsearch.sh start-node I   start it again; healthy once it is back in the cluster
#   deploy/local/elasticsearch.sh pid I          its pid (exit 1 when not running)
#
# stdout carries only the ELASTICSEARCH_URL=... line (a cluster's: every node's URL, comma-separated), so this works:
#   eval "export $(deploy/local/elasticsearch.sh start)"
# Exit codes: 0 ok, 1 failure (build failed, node died, start timeout, port taken...),
#             3 start impossible because java or mvn (or the jars) are missing; fetch exits 0 then.
# Health is GET /_cluster/health; every kind answers GET / and HEAD / (elasticsearch-py info()/ping()).
#
# Environment:
#   SEARCH              elasticsearch8 (default), elasticsearch9 or opensearch
#   LOGFERRY_SERVICES_DIR  folder (default: <repo>/.state); everything lives in $STATE/<kind> (see above); a
#                       cluster's nodes in $STATE/<kind>-cluster/node-I (jars from $STATE/<kind>/lib)
#   ES_NODES            1 (default): one node (discovery.type single-node); N: a cluster of N nodes
#   ES_PORT             HTTP port (default per kind, above) ES_TRANSPORT_PORT  transport port (default 19300, 19301, 19302)
#                       cluster: node I on ES_PORT+I-1 and ES_TRANSPORT_PORT+I-1 (defaults: the kind's ports + 50)
#   ES_HEAP             max heap, e.g. 1g (default 1g; cluster: 512m a node)
#   ES_HEAP_MIN         initial heap (default 512m, capped at ES_HEAP)
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
        LAUNCHER_CLASS=dev.logferry.eslocal.Launcher LAUNCHER_JAR=logferry-es-local.jar MAVEN_PROFILE=
        ;;
    elasticsearch9)
        KIND=elasticsearch9 PROJECT_DIR=$SCRIPT_DIR/elasticsearch DEFAULT_PORT=19201 JAVA_MIN=21
        LAUNCHER_CLASS=dev.logferry.eslocal.Launcher LAUNCHER_JAR=logferry-es-local.jar
        MAVEN_PROFILE=-Pelasticsearch9
        ;;
    opensearch)
        KIND=opensearch PROJECT_DIR=$SCRIPT_DIR/opensearch DEFAULT_PORT=19202 JAVA_MIN=17
        LAUNCHER_CLASS=dev.logferry.oslocal.Launcher LAUNCHER_JAR=logferry-os-local.jar MAVEN_PROFILE=
        ;;
    *)
        echo "elasticsearch.sh: SEARCH must be elasticsearch8, elasticsearch9 or opensearch, not '$SEARCH'" >&2
        exit 2
        ;;
esac
STATE=${LOGFERRY_SERVICES_DIR:-$REPO_ROOT/.state}
ES_NODES=${ES_NODES:-1}
if ! [[ "$ES_NODES" =~ ^[1-9][0-9]?$ ]]; then
    echo "elasticsearch.sh: ES_NODES must be a number from 1 to 99, not '$ES_NODES'" >&2
    exit 2
fi
LIB_DIR=$STATE/$KIND/lib
FINGERPRINT_FILE=$LIB_DIR/.fingerprint
if ((ES_NODES == 1)); then
    ES_PORT=${ES_PORT:-$DEFAULT_PORT}
    ES_TRANSPORT_PORT=${ES_TRANSPORT_PORT:-$((DEFAULT_PORT + 100))}
    ES_HEAP=${ES_HEAP:-1g}
else
    ES_PORT=${ES_PORT:-$((DEFAULT_PORT + 50))}
    ES_TRANSPORT_PORT=${ES_TRANSPORT_PORT:-$((DEFAULT_PORT + 150))}
    # three Elasticsearch nodes and three Kafka brokers beside the tests on a small machine
    ES_HEAP=${ES_HEAP:-512m}
fi
ES_START_TIMEOUT=${ES_START_TIMEOUT:-120}
CLUSTER_DIR=$STATE/$KIND-cluster
# Every node's URL, and what makes the nodes find each other.
ALL_URLS="" SEED_HOSTS="" MASTERS=""
for ((i = 1; i <= ES_NODES; i++)); do
    ALL_URLS+="${ALL_URLS:+,}http://127.0.0.1:$((ES_PORT + i - 1))"
    SEED_HOSTS+="${SEED_HOSTS:+,}127.0.0.1:$((ES_TRANSPORT_PORT + i - 1))"
    MASTERS+="${MASTERS:+,}logferry-es-$i"
done

# node <i>: the folder, files and ports of node i (one node: $STATE/<kind> as always).
node() {
    NODE=$1
    if ((ES_NODES == 1)); then ES_DIR=$STATE/$KIND; else ES_DIR=$CLUSTER_DIR/node-$NODE; fi
    LOG_DIR=$ES_DIR/logs
    LOG_FILE=$LOG_DIR/$KIND.log
    PID_FILE=$ES_DIR/pid
    HTTP_PORT=$((ES_PORT + NODE - 1))
    TRANSPORT_PORT=$((ES_TRANSPORT_PORT + NODE - 1))
    ES_URL="http://127.0.0.1:$HTTP_PORT"
}
node 1

if [[ -n "${SEARCH_JAVA_HOME:-}" ]]; then
    export JAVA_HOME=$SEARCH_JAVA_HOME
elif [[ -z "${JAVA_HOME:-}" && -x /usr/lib/jvm/java-17-openjdk-amd64/bin/java ]]; then
    export JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64
fi

say() { echo "$KIND: $*" >&2; }

# Serialises start/stop/reset (e.g. parallel test workers all calling start); a cluster's: all of it.
take_lock() {
    local dir=$STATE/$KIND
    ((ES_NODES == 1)) || dir=$CLUSTER_DIR
    mkdir -p "$dir"
    exec 9>"$dir/.lock"
    if ! flock -w 300 9; then
        say "could not take $dir/.lock within 300s"
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
        echo "profile ${MAVEN_PROFILE:-none}"
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
    mkdir -p "$STATE/$KIND"
    local build_dir=$STATE/$KIND/build staging=$LIB_DIR.new build_log=$STATE/$KIND/build.log
    rm -rf "$staging"
    say "building the launcher and gathering jars into $LIB_DIR (log: $build_log)"
    if ! mvn -q -B -f "$PROJECT_DIR/pom.xml" ${MAVEN_PROFILE:+"$MAVEN_PROFILE"} \
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

# 0 when the cluster (as the current node sees it) is at least yellow with all ES_NODES nodes;
# waits up to $1 seconds server-side.
healthy() {
    local wait=${1:-1} code
    code=$(curl -s --noproxy '*' -o /dev/null -w '%{http_code}' --max-time $((wait + 5)) \
        "$ES_URL/_cluster/health?wait_for_status=yellow&wait_for_nodes=$ES_NODES&timeout=${wait}s" 2>/dev/null) || true
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

# start_node: start the current node unless it runs (then says so when `$1` is "say"); 0, or 1 / 3 as start.
start_node() {
    local pid
    if pid=$(running_pid); then
        [[ "${1:-}" == say ]] && say "already running (pid $pid) but not healthy yet; waiting"
        return 0
    else
        rm -f "$PID_FILE"
        if curl -s --noproxy '*' -o /dev/null --max-time 2 "$ES_URL/" 2>/dev/null; then
            say "port $HTTP_PORT is already answering HTTP but not from a node started with state $ES_DIR; not starting"
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
        local -a cluster_args=()
        if ((ES_NODES > 1)); then
            cluster_args=(
                --node-name "logferry-es-$NODE" --cluster-name logferry-local-cluster
                -E discovery.type=multi-node -E "discovery.seed_hosts=$SEED_HOSTS"
                -E "cluster.initial_master_nodes=$MASTERS"
            )
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
                --home "$ES_DIR" --http-port "$HTTP_PORT" --transport-port "$TRANSPORT_PORT" "${cluster_args[@]}" \
                </dev/null >"$LOG_FILE" 2>&1
        ) &
        pid=$!
        echo "$pid" >"$PID_FILE"
        # The subshell becomes setsid, then the JVM, by exec: until then its command line is
        # this script's, and running_pid takes a node still starting for one that exited (a
        # loaded CI run: start-node gave up on node 1 and dropped its pid file, the node came
        # up anyway, and the next tests found its port taken by a node they could not stop).
        while kill -0 "$pid" 2>/dev/null && ! grep -qF "$LAUNCHER_CLASS" "/proc/$pid/cmdline" 2>/dev/null; do
            sleep 0.05
        done
    fi
}

# wait_healthy: until the current node reports a yellow or green cluster of ES_NODES nodes, while every node runs.
wait_healthy() {
    local deadline=$((SECONDS + ES_START_TIMEOUT)) asked=$NODE i
    while ((SECONDS < deadline)); do
        for ((i = 1; i <= ES_NODES; i++)); do
            node "$i"
            if ! running_pid >/dev/null; then
                say "node $i exited during start-up; last lines of $LOG_FILE:"
                tail -n 40 "$LOG_FILE" >&2 || true
                rm -f "$PID_FILE"
                return 1
            fi
        done
        node "$asked"
        if healthy 2; then
            if ((ES_NODES == 1)); then echo "ELASTICSEARCH_URL=$ES_URL"; else echo "ELASTICSEARCH_URL=$ALL_URLS"; fi
            return 0
        fi
        sleep 0.5
    done
    say "not healthy after ${ES_START_TIMEOUT}s (still running); last lines of $LOG_FILE:"
    tail -n 40 "$LOG_FILE" >&2 || true
    return 1
}

do_start() {
    local i
    if ((ES_NODES == 1)) && running_pid >/dev/null && healthy 1; then
        echo "ELASTICSEARCH_URL=$ES_URL"
        return 0
    fi
    for ((i = 1; i <= ES_NODES; i++)); do
        node "$i"
        start_node say || return $?
    done
    node 1
    wait_healthy
}

# stop_node [signal]: the current node; TERM waits up to 30 s for it, then SIGKILL.
stop_node() {
    local pid sig=${1:-TERM}
    if ! pid=$(running_pid); then
        rm -f "$PID_FILE"
        return 0
    fi
    kill "-$sig" "$pid" 2>/dev/null || true
    # a stopped (SIGSTOP) node cannot act on TERM
    kill -CONT "$pid" 2>/dev/null || true
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

do_stop() {
    local i pids=()
    for ((i = 1; i <= ES_NODES; i++)); do
        node "$i"
        stop_node &
        pids+=($!)
    done
    wait "${pids[@]}"
}

do_status() {
    local pid i
    for ((i = 1; i <= ES_NODES; i++)); do
        node "$i"
        if ! pid=$(running_pid); then
            if ((ES_NODES == 1)); then say "not running"; else say "node $i not running"; fi
            return 1
        fi
    done
    node 1
    if healthy 1; then
        if ((ES_NODES == 1)); then echo "ELASTICSEARCH_URL=$ES_URL"; else echo "ELASTICSEARCH_URL=$ALL_URLS"; fi
        return 0
    fi
    say "running (pid $pid) but not healthy"
    return 1
}

do_reset() {
    local i
    do_stop
    for ((i = 1; i <= ES_NODES; i++)); do
        node "$i"
        rm -rf "$ES_DIR/data"
    done
}

# which_node <i>: node i of the cluster, or exit 2.
which_node() {
    if ((ES_NODES == 1)) || ! [[ "${1:-}" =~ ^[0-9]+$ ]] || (($1 < 1 || $1 > ES_NODES)); then
        say "a node command needs ES_NODES > 1 and a node number from 1 to $ES_NODES"
        exit 2
    fi
    node "$1"
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
    stop-node)
        which_node "${2:-}"
        take_lock
        stop_node
        ;;
    kill-node)
        which_node "${2:-}"
        take_lock
        stop_node KILL
        ;;
    start-node)
        which_node "${2:-}"
        take_lock
        start_node
        wait_healthy
        ;;
    pid)
        which_node "${2:-}"
        running_pid || exit 1
        ;;
    *)
        echo "usage: $0 {fetch|start|stop|status|reset|stop-node I|kill-node I|start-node I|pid I}" >&2
        exit 2
        ;;
esac
