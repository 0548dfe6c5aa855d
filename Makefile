# svcaudit entry points. `make demo` shows the product; `make test` proves it.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
CLUSTER := $(VPY) -m e2e.cluster
NODE ?=
NODES ?= 2
# The test suite runs with the real node (curl/printenv steps) unless TEST_NODE= is given.
TEST_NODE ?= $(if $(NODE),$(NODE),real)

IMAGE ?= svcaudit:dev
KIND_CLUSTER ?= svcaudit-e2e

.PHONY: help venv deps build cluster-up cluster-down cluster-status lint typecheck unit test e2e demo bench image docker-up docker-down deploy-local undeploy-local kind-up kind-down kind-load clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

# The runtime dependencies are installed at exactly the versions the image pins
# (requirements/image.txt as constraints), so what is tested is what ships, whatever PyPI
# released since (tests/integration/test_deploy.py checks it).
$(VENV)/.installed: pyproject.toml requirements/image.txt
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -c requirements/image.txt -e '.[dev]'
	touch $@

venv: $(VENV)/.installed ## create .venv with svcaudit and dev tools

deps: ## install system packages (apt): the cluster's, Docker's and debootstrap; root
	bash e2e/cluster/install-deps.sh

build: ## build (or reuse) the pinned cluster binaries in ~/.cache/svcaudit
	bash e2e/cluster/build.sh

cluster-up: venv build ## start the local cluster (NODE=real adds a kubelet+containerd node)
	$(CLUSTER) up --nodes $(NODES) $(if $(filter real,$(NODE)),--real-node,)

cluster-down: ## stop everything cluster-up started
	$(CLUSTER) down

cluster-status: ## show the local cluster's components
	$(CLUSTER) status

lint: venv ## ruff
	$(VENV)/bin/ruff check operator tests e2e bench conftest.py
	$(VENV)/bin/ruff format --check operator tests e2e bench conftest.py

typecheck: venv ## mypy (strict on the core)
	$(VENV)/bin/mypy

unit: venv ## unit + property tests of the pure core (no cluster)
	$(VENV)/bin/pytest tests/unit -q

test: deps venv build ## everything: lint, types, unit, integration and e2e on the local cluster
	$(MAKE) lint typecheck
	NODE=$(TEST_NODE) $(VENV)/bin/pytest tests e2e/tests -q $(PYTEST_ARGS)

E2E_CLUSTER ?= local
e2e: deps venv build ## the e2e suite: E2E_CLUSTER=local (default) | kind (made here, then deleted) | existing
ifeq ($(E2E_CLUSTER),kind)
	bash e2e/cluster/build.sh kubeadm kind crictl
	$(VPY) -m pip install -q -c requirements/image.txt -e '.[kind]'
endif
	E2E_CLUSTER=$(E2E_CLUSTER) NODE=$(TEST_NODE) $(VENV)/bin/pytest e2e/tests -q $(PYTEST_ARGS)

kind-up: deps venv ## a kind cluster KIND_CLUSTER=svcaudit-e2e with the operator deployed from deploy/
	bash e2e/cluster/build.sh kubeadm kind crictl
	$(VPY) -m e2e.kind.local up --name $(KIND_CLUSTER)

kind-down: ## delete that kind cluster (and the docker network kind, when nothing else uses it)
	$(PY) -m e2e.kind.local down --network --name $(KIND_CLUSTER)

demo: venv build ## local cluster + operator + the tutorial + one mistake, before and after the fix
	$(VPY) -m e2e.demo

bench: venv build ## benchmarks at scale, with Popeye (not part of the tests; docs/benchmarks.md)
	$(VPY) -c 'import matplotlib' 2>/dev/null || $(VPY) -m pip install -q -c requirements/image.txt -e '.[dev,bench]'
	$(VPY) -m bench run $(BENCH_ARGS)

image: deps ## build the operator image IMAGE=svcaudit:dev (starts a Docker engine if none answers)
	$(PY) -m e2e.docker.image --tag $(IMAGE)

docker-up: deps ## a Docker engine: the one that answers, else ours (e2e/docker/engine.py)
	$(PY) -m e2e.docker.engine up

docker-down: ## stop the Docker engine docker-up started (never another)
	$(PY) -m e2e.docker.engine down

deploy-local: venv ## the image on the local cluster's real node: deploy/ (HOW=helm: the chart)
	$(VPY) -m e2e.deploy_local --tag $(IMAGE) $(if $(filter helm,$(HOW)),--helm,)

undeploy-local: venv ## remove what deploy-local applied (the CRD stays)
	$(VPY) -m e2e.deploy_local --delete $(if $(filter helm,$(HOW)),--helm,)

kind-load: image ## load IMAGE into the kind cluster KIND_CLUSTER=svcaudit-e2e (then: kubectl apply -f deploy/)
	$$(command -v kind || echo ~/.cache/svcaudit/kind-$$(sed -n 's/^KIND_VERSION=//p' e2e/cluster/versions.env)/kind) \
	  load docker-image $(IMAGE) --name $(KIND_CLUSTER)

clean: cluster-down docker-down
	rm -rf $(VENV) .cluster
