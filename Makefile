# aitrade: the two commands are `make run` and `make test`. See README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   ?= .venv
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11; do command -v $$p >/dev/null && $$p -c "import sys; sys.exit(sys.version_info < (3, 11))" 2>/dev/null && { command -v $$p; break; }; done)
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check
NB_WORKERS ?= 2

.PHONY: help run install install-dev export clean-nbs check lint format nbtest pytest test bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(PY):
	@test -n "$(PYTHON)" || { echo "make: Python >= 3.11 is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip

# re-install whenever pyproject.toml changes
$(VENV)/.installed-run: pyproject.toml | $(PY)
	$(PIP) -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PIP) -e ".[dev]"
	@touch $@ $(VENV)/.installed-run

# the Hub's Node parts (configurable-http-proxy; oidc-provider for the SSO tests), pinned by hub/package-lock.json
hub/node_modules/.installed: hub/package.json hub/package-lock.json
	@command -v npm >/dev/null || { echo "make: npm (Node.js >= 20) is required for JupyterHub's proxy"; exit 1; }
	npm ci --prefix hub --no-audit --no-fund --loglevel=error
	@touch $@

install: $(VENV)/.installed-run hub/node_modules/.installed ## create .venv and install aitrade

install-dev: $(VENV)/.installed-dev hub/node_modules/.installed ## install aitrade with the dev dependencies

run: install ## install, migrate and start the platform on the embedded defaults
	$(BIN)/aitrade db upgrade
	$(BIN)/aitrade up

export: install-dev ## export nbs/ to aitrade/ (nbdev-export)
	$(BIN)/nbdev-export

clean-nbs: install-dev ## strip outputs and execution counts from the notebooks of nbs/, jobs/, dashboards/ (nbdev-clean)
	$(BIN)/nbdev-clean
	$(BIN)/nbdev-clean --fname jobs
	@if ls dashboards/*.ipynb >/dev/null 2>&1; then $(BIN)/nbdev-clean --fname dashboards; fi

check: install-dev ## aitrade/ matches its notebooks, notebooks are clean
	$(PY) tools/nbcheck.py

lint: install-dev ## ruff lint and format check (notebooks, tests, bench, tools, hub)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-dev ## ruff fix and format
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# one fresh process per notebook, as a reader's fresh kernel would be
nbtest: install-dev ## run every notebook's tests (nbdev-test), each notebook in its own process
	find nbs -name '*.ipynb' -not -path '*/.*' -not -name '_*' | sort | xargs -P $(NB_WORKERS) -n 1 $(BIN)/nbdev-test

# pytest-xdist: whole modules per worker (--dist loadfile), so a module's Hub or browser is started once
PYTEST_WORKERS ?= 2
pytest: install-dev ## integration tests (pytest, on PYTEST_WORKERS workers)
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=30

test: install-dev ## the whole suite: export and clean checks, lint, notebook tests, pytest
	$(MAKE) --no-print-directory check lint nbtest pytest

bench: install-dev ## benchmarks, side by side with the peers (not part of test)
	$(PY) bench/run.py

clean: ## remove the venv, node modules, caches and var/
	rm -rf $(VENV) var hub/node_modules .pytest_cache .ruff_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
