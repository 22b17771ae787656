#!/usr/bin/env bash
# Entry point of the local Kafka image (kafka.Dockerfile): server.properties from defaults for one
# KRaft node, overridden by the environment as apache/kafka reads it (KAFKA_<NAME>: `_` is `.`,
# `__` is `_`, `___` is `-`), storage formatted on first start with $CLUSTER_ID, then the broker.
#   KAFKA_HEAP_OPTS  default "-Xms256m -Xmx512m"      KAFKA_JVM_OPTS  extra JVM options
#   CLUSTER_ID       default a fixed id (one node, one cluster per volume)
set -euo pipefail
HOME_DIR=/var/lib/kafka
PROPS=$HOME_DIR/server.properties
declare -A conf=(
    [node.id]=1
    [process.roles]=broker,controller
    [listeners]=PLAINTEXT://:9092,CONTROLLER://:9093
    [advertised.listeners]=PLAINTEXT://localhost:9092
    [listener.security.protocol.map]=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
    [controller.listener.names]=CONTROLLER
    [inter.broker.listener.name]=PLAINTEXT
    [controller.quorum.voters]=1@localhost:9093
    [log.dirs]=$HOME_DIR/data
    [num.partitions]=3
    [offsets.topic.replication.factor]=1
    [offsets.topic.num.partitions]=10
    [transaction.state.log.replication.factor]=1
    [transaction.state.log.min.isr]=1
    [share.coordinator.state.topic.replication.factor]=1
    [share.coordinator.state.topic.min.isr]=1
    [group.initial.rebalance.delay.ms]=0
    [num.network.threads]=2
    [num.io.threads]=4
    [log.cleaner.dedupe.buffer.size]=16777216
)
while IFS= read -r var; do
    case $var in
        KAFKA_HEAP_OPTS | KAFKA_JVM_OPTS | KAFKA_HEALTH_PORT) continue ;;
    esac
    key=${var#KAFKA_}
    key=${key,,}
    key=${key//___/-}
    key=${key//__/$'\x01'}
    key=${key//_/.}
    key=${key//$'\x01'/_}
    conf[$key]=${!var}
done < <(compgen -e | grep '^KAFKA_' || true)
{
    echo "# Written by kafka-run.sh at start-up from its defaults and KAFKA_* variables."
    for key in "${!conf[@]}"; do echo "$key=${conf[$key]}"; done
} >"$PROPS"
mkdir -p "${conf[log.dirs]}"
CP="/opt/kafka/libs/*"
if [[ ! -f "${conf[log.dirs]}/meta.properties" ]]; then
    java -Xmx256m -cp "$CP" kafka.tools.StorageTool format --ignore-formatted \
        -t "${CLUSTER_ID:-5L6g3nShT-eMCtK--X86sw}" -c "$PROPS"
fi
# shellcheck disable=SC2086 # the options are lists of words
exec java -server ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -XX:MaxDirectMemorySize=256m -Djava.awt.headless=true \
    -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties \
    ${KAFKA_JVM_OPTS:-} -cp "$CP" kafka.Kafka "$PROPS"
