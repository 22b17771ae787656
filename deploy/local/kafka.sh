#!/usr/bin/env bash
# Local Apache Kafka broker (KRaft, combined broker+controller, one node) for logferry's
# tests, run as a plain JVM process from the jars published on Maven Central: no Docker.
#
#   deploy/local/kafka.sh fetch    copy the runtime jars into $STATE/kafka/lib (idempotent)
#   deploy/local/kafka.sh start    fetch, format storage on first start, start, wait until
#                                  ready; prints KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$KAFKA_PORT
#   deploy/local/kafka.sh status   exit 0 + the same line if running and ready, else exit 1
#   deploy/local/kafka.sh stop     SIGTERM, up to 30 s, then SIGKILL (idempotent)
#   deploy/local/kafka.sh reset    stop and delete data and logs (keeps the jars)
#
# stdout carries only the KAFKA_BOOTSTRAP_SERVERS=... line, so this works:
#   eval "export $(deploy/local/kafka.sh start)"
# Exit codes: 0 ok, 1 failure (start timeout, broker died, port taken...),
#             3 start/status impossible because java or mvn (or the jars) are missing.
#
# Environment:
#   LOGFERRY_SERVICES_DIR  folder (default <repo>/.state); all goes to $STATE/kafka
#   KAFKA_PORT             PLAINTEXT listener (default 19092)
#   KAFKA_CONTROLLER_PORT  KRaft controller listener (default 19093)
#   KAFKA_SASL_PORT        if set, adds a SASL_PLAINTEXT listener (mechanism PLAIN,
#                          user "logferry", password $KAFKA_SASL_PASSWORD)
#   KAFKA_SASL_PASSWORD    default logferry-secret
#   KAFKA_HEAP             default "-Xms256m -Xmx768m"
#   KAFKA_JVM_OPTS         extra JVM options
#   KAFKA_START_TIMEOUT    seconds to wait for readiness (default 90)
#   JAVA_HOME              default /usr/lib/jvm/java-17-openjdk-amd64 (Java 17+ needed)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
KAFKA_SRC="$SCRIPT_DIR/kafka"                 # pom.xml, log4j2.properties, KafkaReady.java

STATE=${LOGFERRY_SERVICES_DIR:-$REPO_ROOT/.state}
KAFKA_PORT=${KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-19093}
KAFKA_SASL_PORT=${KAFKA_SASL_PORT:-}
KAFKA_SASL_PASSWORD=${KAFKA_SASL_PASSWORD:-logferry-secret}
KAFKA_HEAP=${KAFKA_HEAP:--Xms256m -Xmx768m}
KAFKA_JVM_OPTS=${KAFKA_JVM_OPTS:-}
KAFKA_START_TIMEOUT=${KAFKA_START_TIMEOUT:-90}
if [[ -z "${JAVA_HOME:-}" && -x /usr/lib/jvm/java-17-openjdk-amd64/bin/java ]]; then
    export JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64
fi

K="$STATE/kafka"
LIB="$K/lib"
DATA="$K/data"
LOGS="$K/logs"
PIDFILE="$K/pid"
PROPS="$K/server.properties"
CLASSES="$K/classes"
BOOTSTRAP="127.0.0.1:$KAFKA_PORT"

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
    mkdir -p "$K"
    local tmp="$K/lib.new"
    rm -rf "$tmp"
    log "fetching Kafka jars with Maven into $LIB"
    # mvn -q still prints ANSI resets on stdout: keep all of its output off our stdout.
    if ! mvn -q -B -Dstyle.color=never -f "$KAFKA_SRC/pom.xml" \
            dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" \
            >"$K/fetch.log" 2>&1; then
        log "mvn dependency:copy-dependencies failed; last lines of $K/fetch.log:"
        tail -n 40 "$K/fetch.log" >&2
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
    if "$javac" -nowarn -cp "$LIB/*" -d "$CLASSES" "$src" >"$K/probe-build.log" 2>&1; then
        echo "$sum" >"$stamp"; echo "$CLASSES"
    fi
}

# wait_ready <timeout s> [pid]: 0 ready, 1 timeout, 2 broker died.
wait_ready() {
    local timeout=$1 pid=${2:-} classes
    classes=$(probe_classes)
    if [[ -n "$classes" ]]; then
        local rc=0
        "$JAVA" -Xmx64m -XX:TieredStopAtLevel=1 -Dlog4j2.level=OFF -cp "$classes:$LIB/*" KafkaReady "$BOOTSTRAP" "$timeout" ${pid:+"$pid"} \
            </dev/null >/dev/null 2>&1 || rc=$?
        return $rc
    fi
    # No javac: fall back to "the PLAINTEXT port accepts connections".
    local end=$((SECONDS + timeout))
    while ((SECONDS < end)); do
        [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null && return 2
        port_open "$KAFKA_PORT" && return 0
        sleep 0.3
    done
    return 1
}

write_props() {
    local listeners="PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT"
    local advertised="PLAINTEXT://127.0.0.1:$KAFKA_PORT"
    local protomap="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    if [[ -n "$KAFKA_SASL_PORT" ]]; then
        if [[ "$KAFKA_SASL_PASSWORD" == *[\"\\\;]* || "$KAFKA_SASL_PASSWORD" == *$'\n'* ]]; then
            log "KAFKA_SASL_PASSWORD must not contain \" \\ ; or newlines"; exit 1
        fi
        listeners+=",SASL_PLAINTEXT://127.0.0.1:$KAFKA_SASL_PORT"
        advertised+=",SASL_PLAINTEXT://127.0.0.1:$KAFKA_SASL_PORT"
        protomap+=",SASL_PLAINTEXT:SASL_PLAINTEXT"
    fi
    local out=${1:-$PROPS}
    cat >"$out.tmp" <<EOF
# Generated by deploy/local/kafka.sh on every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listeners=$listeners
advertised.listeners=$advertised
listener.security.protocol.map=$protomap
log.dirs=$DATA
num.partitions=3
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
delete.topic.enable=true
group.initial.rebalance.delay.ms=0
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
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

lock() {   # serialise start/stop/reset of the same state folder
    mkdir -p "$K"
    exec 9>"$K/.lock"
    if command -v flock >/dev/null && ! flock -w 180 9; then
        log "waited 180s for $K/.lock, going on without it"
    fi
}

cmd_start() {
    lock
    if [[ -z "$JAVA" ]]; then log "java not found (set JAVA_HOME); cannot start Kafka"; exit 3; fi
    cmd_fetch
    if ! jars_current; then log "Kafka jars missing in $LIB (mvn not found?); cannot start"; exit 3; fi

    local pid rc=0 t0=$SECONDS
    if pid=$(pid_alive); then
        # Same idempotent start, different settings (ports, SASL...): restart to apply them.
        write_props "$PROPS.want"
        if ! cmp -s "$PROPS.want" "$PROPS"; then
            log "settings changed since Kafka (pid $pid) started: restarting it"
            rm -f "$PROPS.want"
            cmd_stop
            pid=""
        fi
        rm -f "$PROPS.want"
    fi
    if [[ -n "$pid" ]]; then
        wait_ready "$KAFKA_START_TIMEOUT" "$pid" || rc=$?
        if ((rc == 0)); then echo "KAFKA_BOOTSTRAP_SERVERS=$BOOTSTRAP"; return 0; fi
        log "Kafka (pid $pid) is running but not ready after ${KAFKA_START_TIMEOUT}s"
        print_logs; exit 1
    fi
    rm -f "$PIDFILE"

    local port
    for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" $KAFKA_SASL_PORT; do
        if port_open "$port"; then
            log "port 127.0.0.1:$port is already in use by another process; cannot start Kafka"
            exit 1
        fi
    done

    mkdir -p "$DATA" "$LOGS"
    write_props
    if [[ ! -f "$DATA/meta.properties" ]]; then
        local cid
        cid=$(new_cluster_id)
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
    pid=$!
    echo "$pid" >"$PIDFILE"
    log "started Kafka pid $pid, waiting for $BOOTSTRAP (log: $LOGS/server.log)"

    wait_ready "$KAFKA_START_TIMEOUT" "$pid" || rc=$?
    case $rc in
        0) log "Kafka ready in $((SECONDS - t0))s"
           echo "KAFKA_BOOTSTRAP_SERVERS=$BOOTSTRAP" ;;
        2) log "Kafka exited during start-up"; rm -f "$PIDFILE"; print_logs; exit 1 ;;
        *) log "Kafka not ready after ${KAFKA_START_TIMEOUT}s (still running, pid $pid)"
           print_logs; exit 1 ;;
    esac
}

cmd_stop() {
    lock
    local pid i
    if ! pid=$(pid_alive); then rm -f "$PIDFILE"; return 0; fi
    kill -TERM "$pid" 2>/dev/null || true
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
    log "Kafka stopped"
}

cmd_status() {
    local pid rc=0
    if ! pid=$(pid_alive); then echo "kafka: not running" >&2; exit 1; fi
    if ! jars_current; then echo "kafka: running (pid $pid) but jars missing" >&2; exit 1; fi
    wait_ready 5 "$pid" || rc=$?
    if ((rc != 0)); then echo "kafka: running (pid $pid) but not ready" >&2; exit 1; fi
    echo "KAFKA_BOOTSTRAP_SERVERS=$BOOTSTRAP"
}

cmd_reset() {
    cmd_stop
    rm -rf "$DATA" "$LOGS" "$PROPS" "$CLASSES"
    log "Kafka data and logs deleted"
}

case "${1:-}" in
    fetch) cmd_fetch ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    reset) cmd_reset ;;
    *) echo "usage: $0 {fetch|start|stop|status|reset}" >&2; exit 2 ;;
esac
