# Every target does its own set-up; see CONTRACT.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DATABASE_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/orchestration
export REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: venv up migrate test lint demo bench bench-deps chaos clean browser

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip >/dev/null
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

up:
	@scripts/up.sh

migrate: venv up
	$(BIN)/python -m db.migrate

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

browser:
	@scripts/browser.sh

test: venv up browser
	$(BIN)/ruff check .
	$(BIN)/mypy .
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

demo: venv up migrate
	$(BIN)/python -m orchestration.demo

bench-deps: venv
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[dev,bench]'

bench: bench-deps up
	$(BIN)/python -m bench.run

chaos: bench-deps up
	$(BIN)/python -m bench.chaos

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
