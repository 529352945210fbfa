# mcplane: `make demo` runs the sidecar in front of the bundled demo server; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY_STAMP := $(VENV)/.installed
NODE_STAMP := tests/node/node_modules/.installed
# asyncmcp 0.2.1 (the async-transport peer) needs mcp 1.x and Starlette < 1.0: its own venv, run as subprocesses.
ASYNCMCP_VENV := .venv-asyncmcp
ASYNCMCP_STAMP := $(ASYNCMCP_VENV)/.installed
ASYNCMCP_CONSTRAINTS := tests/async/constraints-asyncmcp.txt

.PHONY: demo test test-fast lint typecheck bench clean

$(PY_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

$(ASYNCMCP_STAMP): $(ASYNCMCP_CONSTRAINTS)
	$(PYTHON) -m venv $(ASYNCMCP_VENV)
	$(ASYNCMCP_VENV)/bin/pip install --quiet --upgrade pip
	$(ASYNCMCP_VENV)/bin/pip install --quiet -c $(ASYNCMCP_CONSTRAINTS) \
		asyncmcp==0.2.1 mcp==1.30.0 starlette==0.52.1 boto3
	touch $@

$(NODE_STAMP): tests/node/package.json tests/node/package-lock.json
	cd tests/node && npm ci --legacy-peer-deps --no-audit --no-fund --loglevel=error
	touch $@

demo: $(PY_STAMP)
	$(BIN)/mcplane-sidecar --demo

PY_DIRS := $(wildcard sidecar operator tests bench)

lint: $(PY_STAMP)
	$(BIN)/ruff check $(PY_DIRS)
	$(BIN)/ruff format --check $(PY_DIRS)

typecheck: $(PY_STAMP)
	$(BIN)/mypy

test-fast: $(PY_STAMP)
	$(BIN)/pytest -m "not e2e"

test: $(PY_STAMP) $(NODE_STAMP) $(ASYNCMCP_STAMP) .tools/bin/helm prometheus lint typecheck
	$(BIN)/pytest

# One command: every benchmark, then docs/benchmarks.md and its plots. Smaller: make bench BENCH_ARGS=--quick
bench: $(PY_STAMP) $(ASYNCMCP_STAMP) bench-peers
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

# The peers the benchmark compares against, each in its own venv (bench/peers/), and matplotlib for the plots.
.PHONY: bench-peers
bench-peers: $(PY_STAMP)
	PYTHON=$(PYTHON) bench/peers/setup.sh

clean:
	rm -rf $(VENV) $(ASYNCMCP_VENV) .venv-bench-* tests/node/node_modules .pytest_cache .mypy_cache .ruff_cache

# -- Helm chart and plain install manifest ------------------------------------------------------------------
HELM := .tools/bin/helm

$(HELM): scripts/install-helm.sh
	scripts/install-helm.sh

.PHONY: helm manifests
helm: $(HELM)

# manifests/install.yaml: the chart's defaults, rendered by the real Helm (checked in; a test checks it is fresh).
manifests: $(HELM)
	HELM=$(HELM) scripts/render-install.sh > manifests/install.yaml.tmp
	mv manifests/install.yaml.tmp manifests/install.yaml

# -- Prometheus and promtool (Debian package): the monitoring tests scrape with a real server --------------
.PHONY: prometheus
prometheus:
	scripts/install-prometheus.sh

# -- Reliability suite: faults, fuzzing, soak against real processes on 127.0.0.1 (bench/reliability) -----
# Full sizes (the soak alone takes 10 minutes). Each script stops by itself, stops what it started, and
# writes bench/results/reliability/<scenario>.json and .md; tests/reliability runs the same code small.
.PHONY: reliability
RELIABILITY_RUNS := faults_backend_restart faults_stdio_crashloop faults_sqs_outage faults_stall \
	"fuzz_http --examples 5000" "soak --duration 600"
# Every scenario runs even when an earlier one failed; the target fails if any did.
reliability: $(PY_STAMP) $(ASYNCMCP_STAMP)
	@failed=""; for run in $(RELIABILITY_RUNS); do \
		$(BIN)/python -m bench.reliability.$$run || failed="$$failed $${run%% *}"; \
	done; \
	if [ -n "$$failed" ]; then echo "reliability: failed:$$failed"; exit 1; fi
