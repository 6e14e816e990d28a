# One entry point for people and CI. `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: help test lint fmt crds tools

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 12

test: tools lint ## build the control-plane tools if missing, lint, run every test
	$(CARGO) test

lint: ## formatting and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

crds: ## regenerate manifests/crds/crds.yaml from src/crd/
	$(CARGO) run --quiet -- crds > manifests/crds/crds.yaml

tools: ## build (once) kube-apiserver, kubectl and etcd into ~/.cache/reserve-operator
	@hack/control-plane-tools.sh >/dev/null

.PHONY: demo dev dev-down run bench

demo: ## start a local control plane and the operator, play the samples in examples/, stop everything
	hack/demo.sh

dev: ## start (or reuse) a local control plane with the CRDs for exploring; prints the KUBECONFIG to use
	@hack/local-cluster.sh up >/dev/null
	@echo "Local control plane is up. Use it with:"
	@echo "  $$(hack/local-cluster.sh env)"
	@echo "Run the operator against it with 'make run', stop it with 'make dev-down'."

dev-down: ## stop the local control plane of `make dev` and delete its data
	hack/local-cluster.sh down

run: ## run the operator against the current KUBECONFIG (INSTALL_CRDS=1 applies manifests/crds first)
	@if [ "$(INSTALL_CRDS)" = 1 ]; then kubectl apply -k manifests/crds; fi
	$(CARGO) run --bin reserve-operator -- run --no-leader-election --probe-addr 127.0.0.1:8080 $(ARGS)

bench: tools ## convergence benchmark, 1,000 customers / 20,000 orders (BENCH_ARGS=--sweep for 1k/5k/20k orders)
	hack/bench.sh $(BENCH_ARGS)
