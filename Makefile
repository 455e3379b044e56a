# clickrec: every target that needs the environment builds it first (setup is idempotent).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
CLICKREC := $(VENV)/bin/clickrec
CONFIG ?= conf/local.yaml
EVENTS ?= 200000

.PHONY: help setup test test-fast test-unit demo lint services-up services-down services-status \
        mlflow-ui bench clean image manifests k8s-build k8s-up k8s-image k8s-down e2e

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

setup:  ## venv, pinned packages, JVM jars, MinIO binary (cached; a second run takes seconds)
	@bash scripts/setup.sh

test: setup  ## the whole suite: unit, integration, services (real Kafka/MinIO/MLflow), k8s (CI runs this); not e2e
	$(PY) -m pytest -m "not e2e"

test-fast: setup  ## the edit loop: unit and the quick integration tests, no services (about 3 min; tests/README.md)
	$(PY) -m pytest -m "(unit or integration) and not slow"

test-unit: setup  ## only the unit tests
	$(PY) -m pytest -m unit

demo: setup  ## the main job on the embedded default (local Spark, Delta, MLflow on SQLite)
	bash scripts/demo.sh $(CONFIG) $(EVENTS)

lint: setup  ## ruff on the code, tests and benchmarks; mypy on libs/
	$(VENV)/bin/ruff check libs jobs tests benchmarks
	$(VENV)/bin/mypy

services-up: setup  ## start Kafka, MinIO and the MLflow server on 127.0.0.1
	$(CLICKREC) services up

services-down:  ## stop what services-up started
	$(CLICKREC) services down

services-status:
	$(CLICKREC) services status

mlflow-ui: setup  ## browse the local MLflow runs on http://127.0.0.1:5000
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///.lake/mlflow.db --host 127.0.0.1 --port 5000

bench: setup  ## benchmarks (ingest vs plain copy; MovieLens quality over split seeds, ALS vs implicit; the confidence rule; publish; stream freshness, local and on MinIO; concurrent commits on MinIO; about 1.75 h) -> docs/benchmarks.md
	$(PY) -m benchmarks.run

image:  ## the Kubernetes image clickrec:<version>: Docker when an engine answers, else .cache/image/clickrec-<version>.oci.tar (debootstrap+umoci, root; BUILDER=docker|oci to choose; about 10 min)
	@BUILDER=$(BUILDER) bash k8s/image/build.sh

manifests: setup  ## print the rendered k8s manifests (OVERLAY=prod|dev, default prod); docs/deploy.md
	.cache/bin/kustomize build k8s/spark-operator/overlays/$(or $(OVERLAY),prod)

k8s-build:  ## build the local cluster's binaries once into .cache/k8s/bin (Kubernetes, the spark-operator; about 20 min cold; docs/deploy.md "Local cluster")
	@bash k8s/local/build.sh

k8s-up: k8s-build  ## start the local control plane and the spark-operator on this machine (state in .clickrec/k8s)
	@bash k8s/local/up.sh

k8s-image: k8s-up  ## put the project image into the local cluster (builds the OCI archive first when the sources changed)
	@bash k8s/local/load-image.sh

e2e: setup k8s-up k8s-image  ## the e2e tier (tests/e2e) against the local cluster, which it starts; leaves it running
	$(PY) -m pytest -m e2e

k8s-down:  ## stop what k8s-up started (keeps .clickrec/k8s; k8s/local/down.sh --wipe deletes it)
	@bash k8s/local/down.sh

clean:  ## remove the local lake, MLflow store and service state (keeps the caches)
	-$(CLICKREC) services down
	rm -rf .lake .clickrec spark-warehouse
