# mcplane: `make demo` runs the sidecar in front of the bundled demo server; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY_STAMP := $(VENV)/.installed
NODE_STAMP := tests/node/node_modules/.installed

.PHONY: demo test test-fast lint typecheck bench clean

$(PY_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

$(NODE_STAMP): tests/node/package.json tests/node/package-lock.json
	cd tests/node && npm ci --legacy-peer-deps --no-audit --no-fund --loglevel=error
	touch $@

demo: $(PY_STAMP)
	$(BIN)/mcplane-sidecar --demo

PY_DIRS := $(wildcard sidecar tests bench)

lint: $(PY_STAMP)
	$(BIN)/ruff check $(PY_DIRS)
	$(BIN)/ruff format --check $(PY_DIRS)

typecheck: $(PY_STAMP)
	$(BIN)/mypy

test-fast: $(PY_STAMP)
	$(BIN)/pytest -m "not e2e"

test: $(PY_STAMP) $(NODE_STAMP) lint typecheck
	$(BIN)/pytest

bench: $(PY_STAMP) $(NODE_STAMP)
	$(BIN)/python bench/sidecar_latency.py

clean:
	rm -rf $(VENV) tests/node/node_modules .pytest_cache .mypy_cache .ruff_cache
