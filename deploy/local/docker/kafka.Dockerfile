# Apache Kafka (KRaft, one combined broker and controller) from the jars deploy/local/kafka.sh
# gathers from Maven, on the JVM base of deploy/local/docker.sh: the stand-in for the
# apache/kafka image where no image registry is reachable. deploy/local/server-images.sh
# builds it. Settings come from the environment as with apache/kafka (kafka-run.sh).
ARG BASE=logferry/jvm:bookworm
FROM ${BASE}
COPY lib /opt/kafka/libs
COPY kafka-log4j2.properties /opt/kafka/config/log4j2.properties
COPY kafka-run.sh /opt/kafka/bin/kafka-run.sh
RUN useradd --uid 1000 --home-dir /var/lib/kafka --create-home --shell /usr/sbin/nologin kafka
USER 1000:1000
VOLUME /var/lib/kafka
EXPOSE 9092 9093
HEALTHCHECK --interval=5s --timeout=5s --start-period=60s --retries=12 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${KAFKA_HEALTH_PORT:-9092}"]
ENTRYPOINT ["/opt/kafka/bin/kafka-run.sh"]
