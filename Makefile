# omi-build: the one entry point for developers and CI. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TESTS ?=
PYTEST_ARGS := $(if $(TESTS),-k "$(TESTS)",)
# Debian packages the integration tests and the main job call (daemonless container tools).
DEBIAN_PACKAGES := buildah skopeo umoci runc qemu-user-static gpgv debian-archive-keyring ca-certificates nghttp2-client docker-registry

.PHONY: generate help deps dev lock-dev bench-peers lint fmt test test-integration test-runtime check demo demo-registry bench update-golden clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

deps: ## install the Debian packages omi-build drives (needs root; skips what is present)
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# Every dev and test dependency, the build backend included, comes from requirements/dev.lock,
# pinned with hashes: CI tests what the lock says, not what PyPI serves that day.
$(BIN)/.installed: pyproject.toml requirements/dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --require-hashes -r requirements/dev.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

dev: $(BIN)/.installed ## create .venv with omi-build (editable) and the dev tools, from requirements/dev.lock

UV_COMPILE := pip compile -q --universal --python-version 3.11 --generate-hashes
lock-dev: dev ## refresh requirements/*.lock (pinned, hashed dev and test dependencies) from pyproject.toml
	$(BIN)/uv $(UV_COMPILE) --upgrade --extra dev pyproject.toml requirements/build.in -o requirements/dev.lock
	$(BIN)/uv $(UV_COMPILE) --upgrade requirements/runtime-tests.in -o requirements/runtime-tests.lock
	for peer in kserve mlserver; do $(BIN)/uv $(UV_COMPILE) --upgrade requirements/bench-$$peer.in -o requirements/bench-$$peer.lock || exit 1; done

fmt: dev ## format the code
	$(BIN)/ruff format omi_build tests examples bench
	$(BIN)/ruff check --fix omi_build tests examples bench

lint: dev ## ruff, mypy (strict), import contracts, schema self-check
	$(BIN)/ruff format --check omi_build tests examples bench
	$(BIN)/ruff check omi_build tests examples bench
	$(BIN)/mypy
	for example in examples/*/; do $(BIN)/mypy --strict $$example || exit 1; done
	$(BIN)/lint-imports
	$(BIN)/python -c "import json, jsonschema; jsonschema.Draft202012Validator.check_schema(json.load(open('schemas/omi.schema.json')))"

test: dev ## unit and golden tests: fast and offline (TESTS=pattern filters)
	$(BIN)/pytest -m "not integration" $(PYTEST_ARGS)

test-integration: deps dev ## tests that build, run and call real images (network, container tools)
	$(BIN)/pytest -m integration $(PYTEST_ARGS)

test-runtime: ## the runtime's tests in a venv holding only its own dependencies (no builder's)
	$(PYTHON) -m venv .venv-runtime
	.venv-runtime/bin/python -m pip install -q --require-hashes -r requirements/runtime-tests.lock
	.venv-runtime/bin/python -m pytest -q -p no:cacheprovider tests/runtime

check: deps dev lint test-runtime ## everything CI runs: lint, then every test
	$(BIN)/pytest $(PYTEST_ARGS)

# The demo signs with a throwaway key pair it makes beside the image; a real pipeline signs
# keylessly in CI, or with a key kept in its secrets (see README, "Supply chain").
DEMO := examples/iris-sklearn
DEMO_KEY := omi-out/demo-cosign
demo: deps dev ## the main job: validate, check the lock, build the iris example, sign and verify it, run it and call it
	$(BIN)/omi-build validate $(DEMO)
	$(BIN)/omi-build lock --check $(DEMO)
	$(BIN)/omi-build build --locked $(DEMO)
	COSIGN_PASSWORD=demo $(BIN)/omi-build keygen --force --output-key-prefix $(DEMO_KEY)
	COSIGN_PASSWORD=demo $(BIN)/omi-build sign --key $(DEMO_KEY).key $(DEMO)
	$(BIN)/omi-build verify --key $(DEMO_KEY).pub --require sbom,provenance,model $(DEMO)
	$(BIN)/omi-build test $(DEMO)
	@if [ -n "$(REGISTRY)" ]; then set -e; \
	  echo "== push, pull, verify and deploy through $(REGISTRY)"; \
	  $(BIN)/omi-build push $(DEMO) $(REGISTRY)/iris-classifier; \
	  rm -rf omi-out/demo-pulled; $(BIN)/omi-build pull $(REGISTRY)/iris-classifier:1.0.0 omi-out/demo-pulled; \
	  $(BIN)/omi-build verify --key $(DEMO_KEY).pub --require sbom,provenance,model $(REGISTRY)/iris-classifier:1.0.0; \
	  $(BIN)/omi-build deploy kserve --key $(DEMO_KEY).pub $(REGISTRY)/iris-classifier:1.0.0 --output omi-out/iris-inferenceservice.yaml; \
	fi

# A throwaway registry (Debian's docker-registry) on 127.0.0.1:5000 for the demo: started,
# used, stopped; its storage under omi-out/registry.
demo-registry: deps dev ## the main job, then push, pull, verify and deploy through a local registry
	@mkdir -p omi-out/registry && printf 'version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: "127.0.0.1:5000"}\n' "$(CURDIR)/omi-out/registry/data" > omi-out/registry/config.yml
	@env -u REGISTRY_AUTH_FILE docker-registry serve omi-out/registry/config.yml > omi-out/registry/log 2>&1 & echo $$! > omi-out/registry/pid; \
	  trap 'kill $$(cat omi-out/registry/pid) 2>/dev/null' EXIT; sleep 1; \
	  $(MAKE) --no-print-directory demo REGISTRY=127.0.0.1:5000

# bench/serve.py measures KServe's and MLServer's servers beside omi-build's: each in its own
# venv (their protobuf pins clash with each other and with ours), never in the project's.
BENCH_PEERS := .venv-bench-kserve .venv-bench-mlserver

.venv-bench-%: requirements/bench-%.lock | dev
	rm -rf $@ && $(PYTHON) -m venv $@
	$(BIN)/uv pip install -q --python $@/bin/python --require-hashes -r $<

bench-peers: $(BENCH_PEERS) ## the venvs of the servers bench/serve.py compares with (KServe, MLServer)

bench: deps dev $(BENCH_PEERS) ## print the benchmark figures (bench/*.py)
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

generate: dev ## regenerate the runtime gRPC stubs from protos/
	$(BIN)/python -m omi_build.protogen

update-golden: dev ## rewrite the golden files (error texts, image digest); review the diff
	OMI_UPDATE_GOLDEN=1 $(BIN)/pytest -q tests/test_manifest_corpus.py
	OMI_UPDATE_GOLDEN=1 $(BIN)/pytest -q -m integration tests/integration/test_build.py -k golden

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) $(BENCH_PEERS) .mypy_cache .ruff_cache .pytest_cache .hypothesis
