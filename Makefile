# `make test` and `make demo` bootstrap everything they need on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
# The suite mostly waits on real processes (server, agents, moto): `make test` runs it on two pytest-xdist
# workers, each test file on one worker (module-scoped stacks start once; tests/conftest.py merges
# docs/reliability.md on the controller). PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 2
# Python writes its bytecode caches even where the environment says not to: the suite starts hundreds of Python
# processes (servers, agents, moto), and each would otherwise compile every module it imports, every time.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: venv test browser-deps unit lint typecheck demo bench clean help

help:
	@echo "make demo   - run the emulated region, server and agents with a live scenario"
	@echo "make test   - lint, type-check and run the whole test suite"
	@echo "make lint   - ruff + mypy"
	@echo "make bench  - benchmarks, written to docs/benchmarks.md"

# uv (pinned in constraints.txt) installs the pinned set in seconds where pip takes over a minute. It trusts the
# system's certificate store, as pip does here (/etc/pip.conf), whether or not SSL_CERT_FILE is set.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt uv
	$(BIN)/uv pip install --quiet --system-certs --python $(BIN)/python -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/mypy src/spot_optimizer/core src/spot_optimizer/aws

typecheck: lint

# Debian's Chromium for the dashboard's browser tests (Playwright never downloads a browser here).
browser-deps:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

# The venv (then lint) and Chromium's apt install are independent: both at once.
test:
	@$(MAKE) --no-print-directory --output-sync=target -j2 lint browser-deps
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/spot-optimizer demo $(DEMO_ARGS)

bench: $(STAMP)
	$(BIN)/python -m spot_optimizer.bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
