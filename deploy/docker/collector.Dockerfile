# syntax=docker/dockerfile:1
# logferry collector, the node agent (python -m collector). Build from the repository root:
#   docker build -f deploy/docker/collector.Dockerfile -t logferry/collector:0.1.0 .
# The base is pinned to a Python patch release and a Debian release; bump both on purpose.
ARG PYTHON_IMAGE=python:3.11.15-slim-trixie

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY logferry/ logferry/
COPY collector/ collector/
COPY pipeline/ pipeline/
# The project's wheel first, then a virtual environment with it and its dependencies, from
# binary wheels only (confluent-kafka and orjson ship manylinux wheels: no compiler here).
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/logferry \
 && /opt/logferry/bin/python -m pip install --no-cache-dir --only-binary=:all: /wheels/logferry-*.whl

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="logferry-collector" \
      org.opencontainers.image.description="Ships Kubernetes container logs to Kafka" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/logferry/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/logferry /opt/logferry
# The checkpoint folder (--state-dir); a hostPath or a volume is mounted over it.
RUN mkdir -p /var/lib/logferry
# No USER: the log files it reads belong to root (0640, folders 0700/0710), so the collector
# runs as uid 0, and its runners take root's powers away: the DaemonSet and the compose file
# drop every capability but DAC_READ_SEARCH and make the root filesystem read-only.
EXPOSE 2020
# The port is the one the program serves: LOGFERRY_METRICS_PORT, as the program reads it
# (0: no endpoint, nothing to check).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; p = os.environ.get('LOGFERRY_METRICS_PORT') or '2020'; p == '0' or urllib.request.urlopen(f'http://127.0.0.1:{p}/healthz', timeout=4)"]
ENTRYPOINT ["python", "-m", "collector"]
