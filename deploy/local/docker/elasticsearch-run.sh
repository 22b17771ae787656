#!/usr/bin/env bash
# Entry point of the local Elasticsearch image (elasticsearch.Dockerfile): the launcher of
# deploy/local/elasticsearch/ on all interfaces, ports 9200 and 9300. As with the official
# image, every environment variable whose name holds a dot is a node setting (-E name=value),
# except xpack.* (these jars have no x-pack: security is simply off); ES_JAVA_OPTS adds JVM
# options (default heap -Xms512m -Xmx1g).
set -euo pipefail
HOME_DIR=/usr/share/elasticsearch
settings=()
while IFS='=' read -r -d '' name value; do
    [[ "$name" == *.* && "$name" != xpack.* ]] && settings+=(-E "$name=$value")
done < <(env -0)
# shellcheck disable=SC2086 # ES_JAVA_OPTS is a list of words
exec java -Xms512m -Xmx1g -Xss1m -XX:+UseG1GC -XX:-OmitStackTraceInFastThrow \
    -Djava.awt.headless=true -Dfile.encoding=UTF-8 "-Djava.io.tmpdir=$HOME_DIR/tmp" -Djna.nosys=true \
    -Des.networkaddress.cache.ttl=60 -Des.networkaddress.cache.negative.ttl=10 \
    -Dio.netty.noUnsafe=true -Dio.netty.noKeySetOptimization=true \
    -Dio.netty.recycler.maxCapacityPerThread=0 \
    -Dlog4j.shutdownHookEnabled=false -Dlog4j2.disable.jmx=true -Dlog4j2.formatMsgNoLookups=true \
    -Djava.locale.providers=SPI,COMPAT ${ES_JAVA_OPTS:-} \
    -cp "$HOME_DIR/lib/*" dev.logferry.eslocal.Launcher \
    --home "$HOME_DIR" --host 0.0.0.0 --http-port 9200 --transport-port 9300 \
    --cluster-name docker-cluster --node-name "$(hostname)" "${settings[@]}"
