# The two commands a new user runs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?=

.PHONY: run test lint bench clean sysdeps

$(BIN)/notifier: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

## Start notifier on its embedded defaults (or CONFIG=path/to/notifier.toml).
run: $(BIN)/notifier
	$(BIN)/notifier run $(if $(CONFIG),--config $(CONFIG))

## Install everything the tests need (Python and Debian packages) and run them.
test: $(BIN)/notifier sysdeps
	$(BIN)/pytest -q

sysdeps:
	@scripts/install-test-deps.sh
	@sh scripts/install-browser-deps.sh

lint: $(BIN)/notifier
	$(BIN)/ruff check notifier tests bench
	$(BIN)/ruff format --check notifier tests bench
	$(BIN)/mypy

bench: $(BIN)/notifier
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) var .pytest_cache
