#!/usr/bin/env bash
# Local Apache Kafka (KRaft, combined broker+controller: one node, or a cluster of
# KAFKA_BROKERS) for logferry's tests, run as plain JVM processes from the jars published on
# Maven Central: no Docker.
#
#   deploy/local/kafka.sh fetch    copy the runtime jars into $STATE/kafka/lib (idempotent)
#   deploy/local/kafka.sh start    fetch, format storage on first start, start, wait until
#                                  ready; prints KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$KAFKA_PORT
#   deploy/local/kafka.sh status   exit 0 + the same line if running and ready, else exit 1
#   deploy/local/kafka.sh stop     SIGTERM, up to 30 s, then SIGKILL (idempotent)
#   deploy/local/kafka.sh reset    stop and delete data and logs (keeps the jars)
# With KAFKA_BROKERS=N (N > 1), the same commands act on every broker of the cluster, and
# these on broker I (1..N) alone, for fault tests:
#   deploy/local/kafka.sh stop-node I    SIGTERM (controlled shutdown), as stop
#   deploy/local/kafka.sh kill-node I    SIGKILL, no waiting for anything but the exit
#   deploy/local/kafka.sh start-node I   start it again; ready once it sees every running broker
#   deploy/local/kafka.sh pid I          its pid (exit 1 when not running), e.g. for SIGSTOP
#
# stdout carries only the KAFKA_BOOTSTRAP_SERVERS=... line (all brokers, comma-separated), so
# this works:
#   eval "export $(deploy/local/kafka.sh start)"
# Exit codes: 0 ok, 1 failure (start timeout, broker died, port taken...),
#             3 start/status impossible because java or mvn (or the jars) are missing.
#
# Environment:
#   LOGFERRY_SERVICES_DIR  folder (default <repo>/.state); all goes to $STATE/kafka; a cluster's
#                          brokers to $STATE/kafka-cluster/broker-I (jars from $STATE/kafka/lib)
#   KAFKA_BROKERS          1 (default): one broker, topics with one replica; N: N brokers, the
#                          controller quorum on the first three, topics (also those created
#                          automatically) with 3 replicas (N if fewer) and min.insync.replicas 2
#   KAFKA_PORT             PLAINTEXT listener (default 19092; cluster: broker I on
#                          KAFKA_PORT+I-1, default 19492)
#   KAFKA_CONTROLLER_PORT  KRaft controller listener (default 19093; cluster: broker I on
#                          KAFKA_CONTROLLER_PORT+I-1, default 19592)
#   KAFKA_SASL_PORT        if set, adds a SASL_PLAINTEXT listener (mechanism PLAIN,
#                          user "logferry", password $KAFKA_SASL_PASSWORD)
#   KAFKA_SASL_PASSWORD    default logferry-secret
#   KAFKA_HEAP             default "-Xms256m -Xmx768m" (cluster: "-Xms128m -Xmx384m" a broker)
#   KAFKA_JVM_OPTS         extra JVM options
#   KAFKA_START_TIMEOUT    seconds to wait for readiness (default 90)
#   JAVA_HOME              default /usr/lib/jvm/java-17-openjdk-amd64 (Java 17+ needed)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
KAFKA_SRC="$SCRIPT_DIR/kafka"                 # pom.xml, log4j2.properties, KafkaReady.java

STATE=${LOGFERRY_SERVICES_DIR:-$REPO_ROOT/.state}
KAFKA_BROKERS=${KAFKA_BROKERS:-1}
if ! [[ "$KAFKA_BROKERS" =~ ^[1-9][0-9]?$ ]]; then
    echo "kafka.sh: KAFKA_BROKERS must be a number from 1 to 99, not '$KAFKA_BROKERS'" >&2; exit 2
fi
if ((KAFKA_BROKERS == 1)); then
    KAFKA_PORT=${KAFKA_PORT:-19092}
    KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-19093}
    KAFKA_HEAP=${KAFKA_HEAP:--Xms256m -Xmx768m}
else
    KAFKA_PORT=${KAFKA_PORT:-19492}
    KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-19592}
    # three brokers and three Elasticsearch nodes beside the tests on a small machine
    KAFKA_HEAP=${KAFKA_HEAP:--Xms128m -Xmx384m}
fi
KAFKA_SASL_PORT=${KAFKA_SASL_PORT:-}
KAFKA_SASL_PASSWORD=${KAFKA_SASL_PASSWORD:-logferry-secret}
KAFKA_JVM_OPTS=${KAFKA_JVM_OPTS:-}
KAFKA_START_TIMEOUT=${KAFKA_START_TIMEOUT:-90}
if [[ -z "${JAVA_HOME:-}" && -x /usr/lib/jvm/java-17-openjdk-amd64/bin/java ]]; then
    export JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64
fi

LIB="$STATE/kafka/lib"
CLASSES="$STATE/kafka/classes"
CLUSTER="$STATE/kafka-cluster"
# Every broker's listener, and as many replicas as there are brokers, up to 3.
BOOTSTRAP=""
for ((i = 1; i <= KAFKA_BROKERS; i++)); do BOOTSTRAP+="${BOOTSTRAP:+,}127.0.0.1:$((KAFKA_PORT + i - 1))"; done
REPLICAS=$((KAFKA_BROKERS < 3 ? KAFKA_BROKERS : 3))
MIN_ISR=$((REPLICAS < 3 ? 1 : 2))
VOTERS=""
for ((i = 1; i <= REPLICAS; i++)); do VOTERS+="${VOTERS:+,}$i@127.0.0.1:$((KAFKA_CONTROLLER_PORT + i - 1))"; done

# node <i>: the folder, files and ports of broker i (one broker: $STATE/kafka as always).
node() {
    NODE=$1
    if ((KAFKA_BROKERS == 1)); then K="$STATE/kafka"; else K="$CLUSTER/broker-$NODE"; fi
    DATA="$K/data"
    LOGS="$K/logs"
    PIDFILE="$K/pid"
    PROPS="$K/server.properties"
    PORT=$((KAFKA_PORT + NODE - 1))
    CONTROLLER_PORT=$((KAFKA_CONTROLLER_PORT + NODE - 1))
    SASL_PORT=${KAFKA_SASL_PORT:+$((KAFKA_SASL_PORT + NODE - 1))}
}
node 1

log() { echo "kafka.sh: $*" >&2; }

java_bin() {
    if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
        echo "$JAVA_HOME/bin/java"
    else
        command -v java || true
    fi
}
JAVA=$(java_bin)

pom_sum() { sha256sum "$KAFKA_SRC/pom.xml" | cut -d' ' -f1; }

jars_current() {
    [[ -f "$LIB/.pom.sha256" ]] && [[ "$(cat "$LIB/.pom.sha256")" == "$(pom_sum)" ]] &&
        compgen -G "$LIB/kafka_2.13-*.jar" >/dev/null
}

cmd_fetch() {
    jars_current && return 0
    if [[ -z "$JAVA" ]]; then log "java not found (set JAVA_HOME); Kafka jars not fetched"; return 0; fi
    if ! command -v mvn >/dev/null; then log "mvn not found; Kafka jars not fetched"; return 0; fi
    mkdir -p "$STATE/kafka"
    local tmp="$LIB.new"
    rm -rf "$tmp"
    log "fetching Kafka jars with Maven into $LIB"
    # mvn -q still prints ANSI resets on stdout: keep all of its output off our stdout.
    if ! mvn -q -B -Dstyle.color=never -f "$KAFKA_SRC/pom.xml" \
            dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" \
            >"$STATE/kafka/fetch.log" 2>&1; then
        log "mvn dependency:copy-dependencies failed; last lines of $STATE/kafka/fetch.log:"
        tail -n 40 "$STATE/kafka/fetch.log" >&2
        return 1
    fi
    pom_sum >"$tmp/.pom.sha256"
    rm -rf "$LIB"
    mv "$tmp" "$LIB"
}

pid_alive() {   # prints the broker pid if the pid file names a live kafka.Kafka process
    [[ -f "$PIDFILE" ]] || return 1
    local pid
    pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka' || return 1
    echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Compile the readiness probe once (javac ships with the JDK); empty when impossible.
probe_classes() {
    local src="$KAFKA_SRC/KafkaReady.java" stamp="$CLASSES/.sha256" sum javac
    sum="$(cat "$src" "$LIB/.pom.sha256" | sha256sum | cut -d' ' -f1)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$sum" && -f "$CLASSES/KafkaReady.class" ]]; then
        echo "$CLASSES"; return 0
    fi
    javac="$(dirname "$JAVA")/javac"
    [[ -x "$javac" ]] || return 0
    rm -rf "$CLASSES"; mkdir -p "$CLASSES"
    if "$javac" -nowarn -cp "$LIB/*" -d "$CLASSES" "$src" >"$STATE/kafka/probe-build.log" 2>&1; then
        echo "$sum" >"$stamp"; echo "$CLASSES"
    fi
}

# wait_ready <timeout s> [pid]: 0 ready (all KAFKA_BROKERS registered), 1 timeout, 2 broker died.
# Asks $ASK when set (start-node: the restarted broker itself), else any broker.
wait_ready() {
    local timeout=$1 pid=${2:-} classes
    classes=$(probe_classes)
    if [[ -n "$classes" ]]; then
        local rc=0
        "$JAVA" -Xmx64m -XX:TieredStopAtLevel=1 -Dlog4j2.level=OFF -Dlogferry.kafka.brokers="${EXPECT:-$KAFKA_BROKERS}" \
            -cp "$classes:$LIB/*" KafkaReady "${ASK:-$BOOTSTRAP}" "$timeout" ${pid:+"$pid"} \
            </dev/null >/dev/null 2>&1 || rc=$?
        return $rc
    fi
    # No javac: fall back to "the PLAINTEXT port accepts connections".
    local end=$((SECONDS + timeout))
    while ((SECONDS < end)); do
        [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null && return 2
        port_open "$PORT" && return 0
        sleep 0.3
    done
    return 1
}

write_props() {
    local listeners="PLAINTEXT://127.0.0.1:$PORT" roles=broker
    local advertised="PLAINTEXT://127.0.0.1:$PORT"
    if ((NODE <= REPLICAS)); then
        listeners+=",CONTROLLER://127.0.0.1:$CONTROLLER_PORT"
        roles=broker,controller
    fi
    local protomap="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    if [[ -n "$KAFKA_SASL_PORT" ]]; then
        if [[ "$KAFKA_SASL_PASSWORD" == *[\"\\\;]* || "$KAFKA_SASL_PASSWORD" == *$'\n'* ]]; then
            log "KAFKA_SASL_PASSWORD must not contain \" \\ ; or newlines"; exit 1
        fi
        listeners+=",SASL_PLAINTEXT://127.0.0.1:$SASL_PORT"
        advertised+=",SASL_PLAINTEXT://127.0.0.1:$SASL_PORT"
        protomap+=",SASL_PLAINTEXT:SASL_PLAINTEXT"
    fi
    local out=${1:-$PROPS}
    cat >"$out.tmp" <<EOF
# Generated by deploy/local/kafka.sh on every start; edit the script, not this file.
process.roles=$roles
node.id=$NODE
controller.quorum.voters=$VOTERS
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listeners=$listeners
advertised.listeners=$advertised
listener.security.protocol.map=$protomap
log.dirs=$DATA
num.partitions=3
default.replication.factor=$REPLICAS
min.insync.replicas=$MIN_ISR
auto.create.topics.enable=true
delete.topic.enable=true
group.initial.rebalance.delay.ms=0
offsets.topic.replication.factor=$REPLICAS
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=$REPLICAS
transaction.state.log.min.isr=$MIN_ISR
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=$REPLICAS
share.coordinator.state.topic.min.isr=$MIN_ISR
# small machine: fewer threads, smaller log-cleaner buffer (default 128 MiB)
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
background.threads=4
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=16777216
log.retention.hours=24
EOF
    if [[ -n "$KAFKA_SASL_PORT" ]]; then
        cat >>"$out.tmp" <<EOF
listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="logferry" password="$KAFKA_SASL_PASSWORD" user_logferry="$KAFKA_SASL_PASSWORD";
EOF
    fi
    mv "$out.tmp" "$out"
}

new_cluster_id() {   # 16 random bytes, base64url without padding (what Uuid.fromString takes)
    local id
    while :; do
        id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
        [[ "$id" == [A-Za-z0-9]* ]] && { echo "$id"; return; }
    done
}

print_logs() {
    if [[ -s "$LOGS/server.log" ]]; then
        log "last 40 lines of $LOGS/server.log:"; tail -n 40 "$LOGS/server.log" >&2
    fi
    if [[ -s "$LOGS/kafkaServer.out" ]]; then
        log "last 40 lines of $LOGS/kafkaServer.out:"; tail -n 40 "$LOGS/kafkaServer.out" >&2
    fi
}

lock() {   # serialise start/stop/reset of the same state folder (the cluster's: all of it)
    local dir="$STATE/kafka"
    ((KAFKA_BROKERS == 1)) || dir=$CLUSTER
    mkdir -p "$dir"
    exec 9>"$dir/.lock"
    if command -v flock >/dev/null && ! flock -w 180 9; then
        log "waited 180s for $dir/.lock, going on without it"
    fi
}

# The cluster id every broker's storage is formatted with: one broker draws its own, a
# cluster's brokers share the one kept in $CLUSTER/cluster.id.
cluster_id() {
    ((KAFKA_BROKERS == 1)) && { new_cluster_id; return; }
    [[ -s "$CLUSTER/cluster.id" ]] || new_cluster_id >"$CLUSTER/cluster.id"
    cat "$CLUSTER/cluster.id"
}

# launch: start the current node's JVM (storage formatted on its first start); sets LAUNCHED.
launch() {
    local port
    for port in "$PORT" "$CONTROLLER_PORT" $SASL_PORT; do
        if port_open "$port"; then
            log "port 127.0.0.1:$port is already in use by another process; cannot start Kafka"
            exit 1
        fi
    done
    rm -f "$PIDFILE"
    mkdir -p "$DATA" "$LOGS"
    write_props
    if [[ ! -f "$DATA/meta.properties" ]]; then
        local cid
        cid=$(cluster_id)
        log "formatting $DATA (cluster id $cid)"
        if ! "$JAVA" -Xmx256m -cp "$LIB/*" kafka.tools.StorageTool \
                format -t "$cid" -c "$PROPS" >"$LOGS/format.log" 2>&1 </dev/null; then
            log "storage format failed:"; cat "$LOGS/format.log" >&2; exit 1
        fi
    fi

    # New session (setsid) so the broker outlives the caller's terminal / process group;
    # all its fds point at files: $(kafka.sh start) must not wait for the broker's stdout,
    # and fd 9 (our lock) must not be inherited or the next start would block on it.
    # shellcheck disable=SC2086
    (cd "$K" && exec setsid nohup "$JAVA" -server $KAFKA_HEAP \
        -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
        -XX:+ExplicitGCInvokesConcurrent -XX:MaxDirectMemorySize=256m \
        -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$KAFKA_SRC/log4j2.properties" -Dkafka.logs.dir="$LOGS" \
        $KAFKA_JVM_OPTS -cp "$LIB/*" kafka.Kafka "$PROPS" \
        </dev/null >"$LOGS/kafkaServer.out" 2>&1 9>&-) &
    LAUNCHED=$!
    echo "$LAUNCHED" >"$PIDFILE"
    log "started Kafka broker $NODE pid $LAUNCHED on 127.0.0.1:$PORT (log: $LOGS/server.log)"
}

# ready <t0> [pid]: wait for the brokers, print the address line, or say why not and exit 1.
ready() {
    local t0=$1 pid=${2:-} rc=0 i
    wait_ready "$KAFKA_START_TIMEOUT" "$pid" || rc=$?
    case $rc in
        0) log "Kafka ready in $((SECONDS - t0))s"
           echo "KAFKA_BOOTSTRAP_SERVERS=$BOOTSTRAP"; return 0 ;;
        2) log "Kafka exited during start-up"; rm -f "$PIDFILE"; print_logs ;;
        *) log "Kafka not ready after ${KAFKA_START_TIMEOUT}s (still running, pid ${pid:-see pid files})"
           for ((i = 1; i <= KAFKA_BROKERS; i++)); do
               node "$i"; pid_alive >/dev/null || log "broker $i is not running"; print_logs
           done ;;
    esac
    exit 1
}

java_ready() {
    if [[ -z "$JAVA" ]]; then log "java not found (set JAVA_HOME); cannot start Kafka"; exit 3; fi
    cmd_fetch
    if ! jars_current; then log "Kafka jars missing in $LIB (mvn not found?); cannot start"; exit 3; fi
}

cmd_start() {
    lock
    java_ready
    local pid t0=$SECONDS i
    if ((KAFKA_BROKERS > 1)); then
        for ((i = 1; i <= KAFKA_BROKERS; i++)); do
            node "$i"
            if pid=$(pid_alive); then
                write_props "$PROPS.want"
                if cmp -s "$PROPS.want" "$PROPS"; then rm -f "$PROPS.want"; continue; fi
                rm -f "$PROPS.want"
                log "settings changed since broker $i (pid $pid) started: restarting it"
                stop_node
            fi
            launch
        done
        ready "$t0"
        return 0
    fi
    if pid=$(pid_alive); then
        # Same idempotent start, different settings (ports, SASL...): restart to apply them.
        write_props "$PROPS.want"
        if ! cmp -s "$PROPS.want" "$PROPS"; then
            log "settings changed since Kafka (pid $pid) started: restarting it"
            rm -f "$PROPS.want"
            stop_node
            pid=""
        fi
        rm -f "$PROPS.want"
    fi
    if [[ -n "$pid" ]]; then
        local rc=0
        wait_ready "$KAFKA_START_TIMEOUT" "$pid" || rc=$?
        if ((rc == 0)); then echo "KAFKA_BOOTSTRAP_SERVERS=$BOOTSTRAP"; return 0; fi
        log "Kafka (pid $pid) is running but not ready after ${KAFKA_START_TIMEOUT}s"
        print_logs; exit 1
    fi
    launch
    ready "$t0" "$LAUNCHED"
}

# stop_node [signal]: the current node; TERM waits up to 30 s for it, then SIGKILL.
stop_node() {
    local pid i sig=${1:-TERM}
    if ! pid=$(pid_alive); then rm -f "$PIDFILE"; return 0; fi
    kill "-$sig" "$pid" 2>/dev/null || true
    # a stopped (SIGSTOP) broker cannot act on TERM
    kill -CONT "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "Kafka pid $pid still alive after 30s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$PIDFILE"
    log "Kafka broker $NODE stopped"
}

cmd_stop() {
    lock
    local i pids=()
    if ((KAFKA_BROKERS == 1)); then stop_node; return 0; fi
    # All at once: one by one, the last brokers would wait on a quorum already gone.
    for ((i = 1; i <= KAFKA_BROKERS; i++)); do
        node "$i"; stop_node & pids+=($!)
    done
    wait "${pids[@]}"
}

cmd_status() {
    local pid rc=0 i
    for ((i = 1; i <= KAFKA_BROKERS; i++)); do
        node "$i"
        if ! pid=$(pid_alive); then
            if ((KAFKA_BROKERS == 1)); then echo "kafka: not running" >&2; else echo "kafka: broker $i not running" >&2; fi
            exit 1
        fi
    done
    if ! jars_current; then echo "kafka: running (pid $pid) but jars missing" >&2; exit 1; fi
    if ((KAFKA_BROKERS > 1)); then pid=""; fi
    wait_ready 5 "$pid" || rc=$?
    if ((rc != 0)); then echo "kafka: running (pid $pid) but not ready" >&2; exit 1; fi
    echo "KAFKA_BOOTSTRAP_SERVERS=$BOOTSTRAP"
}

cmd_reset() {
    cmd_stop
    local i
    for ((i = 1; i <= KAFKA_BROKERS; i++)); do
        node "$i"; rm -rf "$DATA" "$LOGS" "$PROPS"
    done
    rm -rf "$CLASSES"
    ((KAFKA_BROKERS == 1)) || rm -f "$CLUSTER/cluster.id"
    log "Kafka data and logs deleted"
}

# which_node <i>: broker i of the cluster, or exit 2.
which_node() {
    if ((KAFKA_BROKERS == 1)) || ! [[ "${1:-}" =~ ^[0-9]+$ ]] || (($1 < 1 || $1 > KAFKA_BROKERS)); then
        log "a node command needs KAFKA_BROKERS > 1 and a broker number from 1 to $KAFKA_BROKERS"
        exit 2
    fi
    node "$1"
}

case "${1:-}" in
    fetch) cmd_fetch ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    reset) cmd_reset ;;
    stop-node) which_node "${2:-}"; lock; stop_node ;;
    kill-node) which_node "${2:-}"; lock; stop_node KILL ;;
    start-node)
        which_node "${2:-}"; lock; java_ready
        if ! pid_alive >/dev/null; then launch; fi
        # Ready when it counts as many brokers as run (others may be down on purpose); ask
        # the one started: the others still count a broker killed a moment ago.
        started=$NODE running=0
        for ((i = 1; i <= KAFKA_BROKERS; i++)); do node "$i"; if pid_alive >/dev/null; then running=$((running + 1)); fi; done
        node "$started"
        EXPECT=$running ASK="127.0.0.1:$PORT" ready "$SECONDS" ;;
    pid) which_node "${2:-}"; pid_alive || exit 1 ;;
    *) echo "usage: $0 {fetch|start|stop|status|reset|stop-node I|kill-node I|start-node I|pid I}" >&2; exit 2 ;;
esac
