# casegate: `make up` runs the whole system, `make test` runs the whole suite.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: up test bench install infra migrate schema check clean

$(UV):
	@command -v python3 >/dev/null || { echo "casegate: python3 (3.11+) is required" >&2; exit 1; }
	python3 -m pip install --quiet --user 'uv>=0.5' || python3 -m pip install --quiet 'uv>=0.5'

$(VENV)/.synced: uv.lock pyproject.toml shared/pyproject.toml services/*/pyproject.toml | $(UV)
	$(UV) sync --frozen --all-packages --quiet
	@touch $@

install: $(VENV)/.synced

infra:
	@scripts/ensure-infra.sh

migrate: install infra
	$(VENV)/bin/casegate db create
	$(VENV)/bin/casegate db upgrade
	$(VENV)/bin/casegate users sync config/teams.yaml

up: migrate
	$(PY) scripts/devstack.py

test: install infra
	$(PY) -m pytest -q -p no:cacheprovider

bench: install
	$(PY) bench/e2e.py

schema: install
	$(VENV)/bin/casegate schema --out docs/schemas

clean:
	rm -rf $(VENV)
