# The README's commands. Everything installs into .venv, built from scratch on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Every installable package in the repo: core first (with its optional extras, so the Parquet and
# Dataset sources and sinks are tested), then each plugin folder with a pyproject, then the example
# provider of docs/writing-an-llm-plugin.md (tested as an installed package).
PACKAGES := core[yaml,parquet,datasets,stats] $(sort $(dir $(wildcard plugins/*/pyproject.toml))) examples/taskloom-acme-chat
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck demo bench docs clean

$(STAMP): requirements-dev.txt $(wildcard core/pyproject.toml plugins/*/pyproject.toml examples/taskloom-acme-chat/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(foreach p,$(PACKAGES),-e './$(p)') -r requirements-dev.txt
	# Editable installs are not byte-compiled by pip (and PYTHONDONTWRITEBYTECODE may forbid it later):
	# compile our sources once so every start, `taskloom run` included, skips it.
	$(PY) -m compileall -q core/src plugins/*/src > /dev/null
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: $(STAMP) lint typecheck
	$(PY) -m pytest -m "not ray"
	# The Ray executor's tests, on a real local Ray cluster: a step of their own.
	$(PY) -m pytest -m ray plugins/taskloom-ray/tests

demo: $(STAMP)
	$(VENV)/bin/taskloom run examples/quickstart.yaml

bench: $(STAMP)
	$(PY) -m compileall -q core/src plugins/*/src > /dev/null  # edits since install: start-up is timed
	$(PY) bench/run.py

docs: $(STAMP)
	$(PY) -m pip install --quiet "mkdocs>=1.6"
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache
