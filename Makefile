# jitbroker — `make run` starts the local stack, `make test` installs and runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-unit test-integration test-e2e test-resilience lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/jitbroker dev stack

# tests/resilience runs in a session of its own: it points the stack at a Redis it restarts.
test: install
	$(BIN)/jitbroker policy test examples/dev
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest tests/resilience

test-unit: install
	$(BIN)/python -m pytest tests/unit

test-integration: install
	$(BIN)/python -m pytest tests/integration

test-e2e: install
	$(BIN)/python -m pytest tests/e2e

test-resilience: install
	$(BIN)/python -m pytest tests/resilience

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src

format: install
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

bench: install
	$(BIN)/python -m pytest bench -q -p no:cacheprovider
	@cat bench/report.md

clean:
	rm -rf $(VENV) .dev .pytest_cache .mypy_cache .ruff_cache
