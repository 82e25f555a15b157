# The two commands of the README:
#   make up    installs into .venv and starts the embedded stack (Prefect server on SQLite,
#              every runbook served, the alert intake)
#   make test  installs what the tests need (Debian packages too, when run as root) and runs them
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: up test install lint docs

$(BIN)/runbook: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,browser]"
	touch $@

install: $(BIN)/runbook

up: install
	$(BIN)/runbook up

lint: install
	$(BIN)/runbook lint

test: install
	bash scripts/test-deps.sh
	$(BIN)/python -m pytest -q -ra -n 2 --dist loadfile --durations=30
