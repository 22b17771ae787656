# The stand-in for the official python image where no image registry is reachable, built by
# deploy/local/images.sh on the Debian base of deploy/local/docker.sh (mmdebstrap). It adds
# what deploy/docker/*.Dockerfile use (`python`, venv, pip), and a wheelhouse of the
# project's dependencies made on the host: pip inside the build then needs no index.
ARG BASE=logferry/base:bookworm
FROM ${BASE}
# The packages of the base's own Debian release, as mmdebstrap chose them: no pins.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3-venv python3-pip python-is-python3 \
 && rm -rf /var/lib/apt/lists/*
COPY . /wheelhouse
ENV PIP_NO_INDEX=1 \
    PIP_FIND_LINKS=/wheelhouse
