# Elasticsearch (one node) from the server jars and the launcher deploy/local/elasticsearch.sh
# builds from Maven, on the JVM base of deploy/local/docker.sh: the stand-in for the
# elasticsearch image where no image registry is reachable. deploy/local/server-images.sh
# builds it. Security is off (no x-pack in these jars); settings come from the environment
# as with the official image (elasticsearch-run.sh).
ARG BASE=logferry/jvm:bookworm
FROM ${BASE}
COPY lib /usr/share/elasticsearch/lib
COPY elasticsearch-run.sh /usr/share/elasticsearch/bin/elasticsearch-run.sh
RUN useradd --uid 1000 --home-dir /usr/share/elasticsearch --no-create-home \
        --shell /usr/sbin/nologin elasticsearch \
 && mkdir -p /usr/share/elasticsearch/data \
 && chown 1000:1000 /usr/share/elasticsearch /usr/share/elasticsearch/data
USER 1000:1000
VOLUME /usr/share/elasticsearch/data
EXPOSE 9200 9300
HEALTHCHECK --interval=5s --timeout=5s --start-period=90s --retries=12 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:9200/_cluster/health?wait_for_status=yellow&timeout=4s"]
ENTRYPOINT ["/usr/share/elasticsearch/bin/elasticsearch-run.sh"]
