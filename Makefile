# Two commands do all the set-up: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.DEFAULT_GOAL := help
.PHONY: help run test test-unit test-integration lint format migrate check bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the project's metadata changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed

run: $(VENV)/.installed ## install if needed, migrate, serve (embedded PostgreSQL when none is configured)
	$(BIN)/gemini-backend serve

test: $(VENV)/.installed-dev ## the whole suite: unit and integration tests
	$(BIN)/python -m pytest

test-unit: $(VENV)/.installed-dev ## unit tests only
	$(BIN)/python -m pytest tests/unit

test-integration: $(VENV)/.installed-dev ## integration tests only
	$(BIN)/python -m pytest tests/integration

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

bench: $(VENV)/.installed-dev ## requests per second and memory of one worker (bench/run.py)
	$(BIN)/python bench/run.py

check: $(VENV)/.installed ## validate the settings and reach the database
	$(BIN)/gemini-backend check

clean: ## remove the virtual environment and caches (keeps ./data)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
