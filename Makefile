# One entry point for people and CI. `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: help test lint fmt generate tools

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 12

test: tools lint ## build the control-plane tools if missing, lint, run every test
	$(CARGO) test --workspace --no-fail-fast

lint: ## formatting and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

generate: ## regenerate manifests/crds/crds.yaml from src/crd/ and copy the chart's files from manifests/
	$(CARGO) run --quiet --bin reserve-operator -- crds > manifests/crds/crds.yaml
	cp manifests/crds/crds.yaml charts/reserve-operator/files/crds.yaml
	cp manifests/monitoring/prometheusrule.yaml manifests/monitoring/dashboard.json charts/reserve-operator/files/

tools: ## build (once) the pinned tools into ~/.cache/reserve-operator: kube-apiserver, kubectl, etcd; helm, promtool, health
	@hack/control-plane-tools.sh >/dev/null
	@hack/ecosystem-tools.sh >/dev/null

.PHONY: demo dev dev-down run bench

demo: ## start a local control plane and the operator, play the samples in examples/, stop everything
	hack/demo.sh

dev: tools ## start (or reuse) a local control plane with the API installed; prints the KUBECONFIG to use
	@$(CARGO) build --quiet -p reserve-testkit --bin reserve-cluster
	@target/debug/reserve-cluster up >/dev/null
	@echo "Local control plane is up. Use it with:"
	@echo "  $$(target/debug/reserve-cluster env)"
	@echo "Run the operator against it with 'make run', stop it with 'make dev-down'."

dev-down: ## stop the local control plane of `make dev` and delete its data
	@$(CARGO) build --quiet -p reserve-testkit --bin reserve-cluster
	target/debug/reserve-cluster down

run: ## run the operator against the current KUBECONFIG as its ServiceAccount (INSTALL=1 installs the API and RBAC first; ARGS="--namespace coffee ...")
	hack/run.sh $(ARGS)

bench: tools ## benchmark against a real control plane (BENCH_ARGS: --sweep, --freshness, --help for all)
	$(CARGO) build --release -p reserve-operator -p reserve-bench
	target/release/reserve-bench $(BENCH_ARGS)
