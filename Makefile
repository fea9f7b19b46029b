# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

.PHONY: demo test lint dev services bench screenshot clean

$(VENV)/.installed-base: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[example]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch 2.13.0 is the CPU build; a bare `torch>=2.1` would pull a multi-GB CUDA build.
	$(PIP) install -q 'torch==2.13.0'
	$(PIP) install -q -e '.[dev,example,torch]'
	touch $(VENV)/.installed-base $@

## Materialize the example on the embedded default (SQLite + local disk under .demo/).
demo: $(VENV)/.installed-base
	$(PY) -m example_project.demo

## Install dev extras, lint, start the services the tests need, run the whole suite.
test: $(VENV)/.installed-dev lint services
	$(PY) -m pytest -n 2 --dist loadgroup

## ruff (pyflakes, statement errors, no blind/silent excepts) and mypy, configured in pyproject.toml.
lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check atdata_dagster tests benchmarks example_project examples scripts
	$(VENV)/bin/mypy

## Start (or check) PostgreSQL, Redis, the local S3 server and the local PDS.
services:
	bash scripts/test-services.sh

## `dagster dev` on 127.0.0.1 (PORT=3000 by default) with the example loaded; DAGSTER_HOME is .demo/dagster_home, kept between runs.
dev: $(VENV)/.installed-base
	bash scripts/dev.sh

bench: $(VENV)/.installed-dev
	$(PY) -m benchmarks.run_all

## Re-take docs/images/asset-page.png (example materialized, dagster dev, headless Chromium).
screenshot: $(VENV)/.installed-dev
	bash scripts/install-chromium.sh
	$(PY) scripts/screenshot.py

clean:
	rm -rf .demo .dagster_home .pytest_cache
