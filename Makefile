# Two commands do all the set-up: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

# Every dependency pinned, with hashes, for Python 3.11+ on any platform (the
# markers stay in): written by `make lock` from the ranges in pyproject.toml,
# which stay loose for library users. The dev lock is the runtime one plus the
# [dev] extra, resolved with the runtime pins as constraints so they agree.
LOCK       := requirements.lock
DEV_LOCK   := requirements-dev.lock
UV_VERSION := 0.13.9
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes --quiet \
              --custom-compile-command 'make lock'

.DEFAULT_GOAL := help
.PHONY: help run test test-unit test-integration screenshots contract lint format migrate check bench bench-branches bench-streams bench-usage bench-scale clean lock

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the project's metadata or its lock changes. The lock
# brings every dependency; the project itself goes in with --no-deps, so nothing
# unpinned is installed. pip check catches a lock that pyproject.toml has
# outgrown (a dependency added or a range moved without `make lock`).
$(VENV)/.installed: pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@$(BIN)/python -m pip check || { echo "$(LOCK) is stale: run make lock"; exit 1; }
	@touch $@

$(VENV)/.installed-dev: pyproject.toml $(DEV_LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r $(DEV_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@$(BIN)/python -m pip check || { echo "$(DEV_LOCK) is stale: run make lock"; exit 1; }
	@touch $@ $(VENV)/.installed

run: $(VENV)/.installed ## install if needed, migrate, serve (embedded PostgreSQL when none is configured)
	$(BIN)/gemini-backend serve

test: $(VENV)/.installed-dev ## the whole suite: unit, integration and contract tests
	$(BIN)/python -m pytest

test-unit: $(VENV)/.installed-dev ## unit tests only
	$(BIN)/python -m pytest tests/unit

screenshots: $(VENV)/.installed-dev ## the README's pictures of the chat page, taken by the browser tests
	SCREENSHOTS_DIR=docs/screenshots $(BIN)/python -m pytest tests/browser -k "branches or admin"

test-integration: $(VENV)/.installed-dev ## integration tests only
	$(BIN)/python -m pytest tests/integration

# The OpenAPI document against a live server: schemathesis (every check, a fixed
# seed) and a client generated from it. `make test` runs it with 100 cases per
# operation and without the coverage phase; this target with 300
# (CONTRACT_MAX_EXAMPLES) and every phase, as CI does.
contract: $(VENV)/.installed-dev ## the API contract in full: schemathesis over a live server, a generated client
	CONTRACT_MAX_EXAMPLES=$${CONTRACT_MAX_EXAMPLES:-300} CONTRACT_TIMEOUT=$${CONTRACT_TIMEOUT:-900} \
		CONTRACT_PHASES=$${CONTRACT_PHASES:-examples,coverage,fuzzing,stateful} \
		$(BIN)/python -m pytest tests/contract

lint: $(VENV)/.installed-dev ## ruff, mypy --strict, import-linter
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(VENV)/.installed-dev ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

migrate: $(VENV)/.installed ## apply pending migrations
	$(BIN)/gemini-backend migrate apply

bench: $(VENV)/.installed-dev ## req/s, latency and memory of the API in production against a bare Litestar floor (bench/run.py)
	$(BIN)/python bench/run.py

bench-branches: $(VENV)/.installed-dev ## what the message tree costs as a chat grows (bench/branches.py)
	$(BIN)/python bench/branches.py

bench-streams: $(VENV)/.installed-dev ## 100 answers streaming at once through one worker (bench/streams.py)
	$(BIN)/python bench/streams.py

bench-usage: $(VENV)/.installed-dev ## the usage reports over a million messages (bench/usage.py)
	$(BIN)/python bench/usage.py

bench-scale: $(VENV)/.installed-dev ## list, history, search, stats and sends over a million messages (bench/scale.py)
	$(BIN)/python bench/scale.py

check: $(VENV)/.installed ## validate the settings and reach the database
	$(BIN)/gemini-backend check

lock: | $(BIN)/python ## rewrite both lock files from pyproject.toml (LOCK_ARGS=--upgrade for new releases)
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip compile pyproject.toml $(LOCK_FLAGS) $(LOCK_ARGS) -o $(LOCK)
	$(BIN)/uv pip compile pyproject.toml --extra dev -c $(LOCK) $(LOCK_FLAGS) $(LOCK_ARGS) \
		-o $(DEV_LOCK)

clean: ## remove the virtual environment and caches (keeps ./data)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
