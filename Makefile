# `make test` and `make demo` bootstrap everything they need on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv test browser-deps unit lint typecheck demo bench clean help

help:
	@echo "make demo   - run the emulated region, server and agents with a live scenario"
	@echo "make test   - lint, type-check and run the whole test suite"
	@echo "make lint   - ruff + mypy"
	@echo "make bench  - benchmarks, written to docs/benchmarks.md"

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/mypy src/spot_optimizer/core src/spot_optimizer/aws

typecheck: lint

# Debian's Chromium for the dashboard's browser tests (Playwright never downloads a browser here).
browser-deps:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

test: $(STAMP) lint browser-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/spot-optimizer demo $(DEMO_ARGS)

bench: $(STAMP)
	$(BIN)/python -m spot_optimizer.bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
