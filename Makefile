# One entry point for people and CI. `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: help test test-unit test-velero lint fmt generate tools

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 12

test: tools lint ## build the tools, the image and the previous release if missing, lint, run every test (the node tests need root)
	@if command -v buildah >/dev/null; then hack/image.sh operator >/dev/null && hack/image.sh operator-prime >/dev/null; \
	  else echo "note: no buildah here: the image and node tests will say they are skipped"; fi
	@hack/previous-release.sh >/dev/null
	$(CARGO) test --workspace --no-fail-fast

test-unit: ## the tests that need no cluster: pure rules, the reconcile tier (a scripted API server), the CLI, generated files
	$(CARGO) test --workspace --lib --bins --test cli --test crds_in_sync --test newcomer

test-velero: tools ## back up and restore a shop with Velero (built once, about 7 minutes: velero, its AWS plugin, moto)
	@hack/velero-tools.sh >/dev/null
	$(CARGO) test --test backup velero -- --ignored

lint: ## formatting, clippy (warnings are errors), and no circle among the modules
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --test module_graph

fmt: ## format the code
	$(CARGO) fmt --all

generate: ## regenerate manifests/crds/crds.yaml from src/crd/ and copy the chart's files from manifests/
	$(CARGO) run --quiet --bin reserve-operator -- crds > manifests/crds/crds.yaml
	cp manifests/crds/crds.yaml charts/reserve-operator/files/crds.yaml
	cp manifests/crds/roles.yaml charts/reserve-operator/files/roles.yaml
	cp manifests/monitoring/prometheusrule.yaml manifests/monitoring/dashboard.json charts/reserve-operator/files/

tools: ## build (once) the pinned tools into ~/.cache/reserve-operator: the control plane and node; helm, promtool, health
	@hack/control-plane-tools.sh --node >/dev/null
	@hack/ecosystem-tools.sh >/dev/null

image: ## build the operator's OCI image without Docker: target/image/reserve-operator-<version>.oci.tar
	@hack/image.sh operator >/dev/null

.PHONY: demo demo-down dev dev-down run bench image node-up node-down

NODE_DIR ?= $(HOME)/.local/state/reserve-operator/node
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)

demo: ## start a local control plane and the operator, play the samples in examples/, stop everything
	hack/demo.sh

dev: ## start (or reuse) a local control plane with the API installed; prints the KUBECONFIG to use
	@hack/control-plane-tools.sh >/dev/null
	@$(CARGO) build --quiet -p reserve-testkit --bin reserve-cluster
	@target/debug/reserve-cluster up >/dev/null
	@echo "Local control plane is up. Use it with:"
	@echo "  $$(target/debug/reserve-cluster env)"
	@echo "Run the operator against it with 'make run', stop it with 'make dev-down'."

demo-down: ## stop the control plane `KEEP=1 make demo` left running
	@$(CARGO) build --quiet -p reserve-testkit --bin reserve-cluster
	RESERVE_CLUSTER_DIR=$(CURDIR)/target/demo/cluster target/debug/reserve-cluster down

dev-down: ## stop the local control plane of `make dev` and delete its data
	@$(CARGO) build --quiet -p reserve-testkit --bin reserve-cluster
	target/debug/reserve-cluster down

run: ## run the operator against the current KUBECONFIG as its ServiceAccount (INSTALL=1 installs the API and RBAC first; ARGS="--namespace coffee ...")
	hack/run.sh $(ARGS)

bench: tools ## benchmark against a real control plane (BENCH_ARGS: --sweep, --freshness, --help for all)
	$(CARGO) build --release -p reserve-operator -p reserve-bench
	target/release/reserve-bench $(BENCH_ARGS)

node-up: tools image ## a control plane with one real node (root; containerd, runc, CNI, buildah from Debian) and the image imported; prints the KUBECONFIG
	@$(CARGO) build --quiet -p reserve-testkit --bin reserve-cluster
	@target/debug/reserve-cluster --dir $(NODE_DIR) up --node --image target/image/reserve-operator-$(VERSION).oci.tar >/dev/null
	@echo "A control plane and one node are up. Use them with:"
	@echo "  $$(target/debug/reserve-cluster --dir $(NODE_DIR) env)"
	@echo "Deploy with 'kubectl apply -k tests/e2e' (the base, never pulling the image); stop with 'make node-down'."

node-down: ## tear down the node of `make node-up`; says what, if anything, was left behind
	@$(CARGO) build --quiet -p reserve-testkit --bin reserve-cluster
	target/debug/reserve-cluster --dir $(NODE_DIR) down
