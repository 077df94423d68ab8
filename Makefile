# The two commands a new user runs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?=
# What is installed in the venv, one stamp per step: `make run` installs the runtime only,
# `make test` adds the test extra. Either order installs each once; a changed pyproject.toml,
# setup.py or C source installs both again (the install compiles the C source).
RUNTIME := $(VENV)/.installed-runtime
TESTDEPS := $(VENV)/.installed-test

.PHONY: run test lint bench clean sysdeps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUNTIME): pyproject.toml setup.py notifier/_speedups.c | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

$(TESTDEPS): $(RUNTIME)
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

## Start notifier on its embedded defaults (or CONFIG=path/to/notifier.toml).
run: $(RUNTIME)
	$(BIN)/notifier run $(if $(CONFIG),--config $(CONFIG))

## Install everything the tests need (Python and Debian packages) and run them.
# Most of the suite's time is waiting (group windows, token lifetimes, restarts), so it runs
# in parallel even on two cores; each worker starts its own PostgreSQL and browser.
test: $(TESTDEPS) sysdeps
	$(BIN)/pytest -q -n auto --maxprocesses 4 --dist worksteal

sysdeps:
	@sh scripts/install-test-deps.sh
	@sh scripts/install-browser-deps.sh

lint: $(TESTDEPS)
	$(BIN)/ruff check notifier tests bench
	$(BIN)/ruff format --check notifier tests bench
	$(BIN)/mypy

bench: $(TESTDEPS)
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) var .pytest_cache
