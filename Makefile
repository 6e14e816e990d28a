# One entry point for people and CI. `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: help test lint fmt crds tools

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 12

test: tools lint ## build the control-plane tools if missing, lint, run every test
	$(CARGO) test --all-targets

lint: ## formatting and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

crds: ## regenerate manifests/crds/crds.yaml from src/crd/
	$(CARGO) run --quiet -- crds > manifests/crds/crds.yaml

tools: ## build (once) kube-apiserver, kubectl and etcd into ~/.cache/reserve-operator
	@hack/control-plane-tools.sh >/dev/null
