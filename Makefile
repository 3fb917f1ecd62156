# The two commands the README promises: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY_STAMP := $(VENV)/.installed
STAMP := $(VENV)/.installed-native
NATIVE_SOURCES := $(wildcard native/src/*.rs native/llmtel_native/*) native/Cargo.toml native/Cargo.lock native/pyproject.toml

.PHONY: run test lint format typecheck unit bench install clean prometheus-tools

$(PY_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(PY_STAMP)

## The compiled hot path (native/, Rust through maturin: cargo fetches its crates).
$(STAMP): $(PY_STAMP) $(NATIVE_SOURCES)
	$(BIN)/pip install --quiet ./native
	touch $(STAMP)

install: $(STAMP)

## Start llmtel in embedded mode (OTLP gRPC :4317, OTLP HTTP :4318, API :8000, data in ./data).
run: $(STAMP)
	$(BIN)/llmtel up $(ARGS)

## Lint, type-check and run the whole test suite.
test: $(STAMP) lint typecheck prometheus-tools
	$(BIN)/pytest -q -ra $(PYTEST_ARGS)

## Prometheus and promtool (Debian package) for tests/promql: started by the tests
## themselves on a free port, never as a service.
prometheus-tools:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	    --no-install-recommends prometheus && \
	    { systemctl disable --now prometheus 2>/dev/null || true; }; }

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/bench_embedded.py $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
