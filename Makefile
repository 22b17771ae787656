# Two commands set everything up: `make install`, then `make test` (or `make demo`).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LOCAL := deploy/local

.PHONY: install kube-build test test-long unit integration e2e lint services-up services-down services-status \
	kube-up kube-down images bench bench-latency demo demo-local demo-compose demo-compose-down clean

# The Kubernetes API server's build (about 15 min cold on 2 cores) runs in the background from
# the first step on, overlapping the others and the first tests; `kube.sh start` waits for it.
install: kube-build $(VENV)/.installed
	@$(LOCAL)/kafka.sh fetch
	@$(LOCAL)/elasticsearch.sh fetch
	@$(LOCAL)/docker.sh fetch
	@$(LOCAL)/podman.sh fetch
	@PYTHON=$(PY) deploy/tools/fetch-validators.sh

# Reinstall only when the dependency list changes, so a second `make install` is quick.
$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "logferry needs Python 3.11 or newer")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

# The bigger end-to-end variants (several times the records and faults of `make test`).
test-long: $(VENV)/.installed
	LOGFERRY_LONG=1 $(PY) -m pytest tests/e2e $(PYTEST_ARGS)

unit: $(VENV)/.installed
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: $(VENV)/.installed
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

e2e: $(VENV)/.installed
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

services-up:
	@$(LOCAL)/kafka.sh start
	@$(LOCAL)/elasticsearch.sh start
	@$(LOCAL)/docker.sh start

services-down:
	@$(LOCAL)/kube.sh stop
	@$(LOCAL)/kafka.sh stop
	@$(LOCAL)/elasticsearch.sh stop
	@$(LOCAL)/docker.sh stop

services-status:
	@$(LOCAL)/kafka.sh status; $(LOCAL)/elasticsearch.sh status; $(LOCAL)/docker.sh status; \
		$(LOCAL)/kube.sh status

kube-build:
	@$(LOCAL)/kube.sh fetch-background

# etcd + kube-apiserver (RBAC, admission, ServiceAccount tokens) on 127.0.0.1; prints KUBECONFIG.
kube-up:
	@$(LOCAL)/kube.sh start

kube-down:
	@$(LOCAL)/kube.sh stop

# The collector and pipeline images on the local engine of deploy/local/docker.sh, from a Debian
# base instead of the official python image (no registry needed); prints names and sizes.
images: $(VENV)/.installed
	@PYTHON=$(PY) $(LOCAL)/images.sh build

# With a Docker engine: the compose stack (demo-compose); without: local servers and processes.
demo: $(VENV)/.installed
	@if docker info >/dev/null 2>&1; then $(MAKE) demo-compose; else $(MAKE) demo-local; fi

demo-local: $(VENV)/.installed
	$(PY) deploy/demo/local_demo.py

# The compose stack on the local engine with images built here (no registry needed; no Kibana,
# see deploy/compose/docker-compose.yml for its profile where a registry answers).
demo-compose: $(VENV)/.installed
	@PYTHON=$(PY) $(LOCAL)/compose-demo.sh up

demo-compose-down:
	@$(LOCAL)/compose-demo.sh down

bench-latency: $(VENV)/.installed
	$(PY) bench/e2e_latency.py

bench: $(VENV)/.installed
	$(PY) bench/collector_throughput.py

clean:
	rm -rf $(VENV) .state .pytest_cache .ruff_cache
