# InferBench: `make bench HW=cpu` and `make test` do all set-up themselves.
SHELL := /bin/bash
comma := ,
PYTHON ?= python3
HW ?= cpu
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= cpu,dev
ARGS ?=
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: setup bench test lint clean

setup: $(STAMP)

# Re-install when the project's dependency list changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	$(PY) -c "import bench, torch; print('inferbench', bench.__version__, 'torch', torch.__version__)"
	touch $@

bench: setup
	$(PY) -m bench run --profile $(HW) $(ARGS)

test: setup
	$(PY) -m pytest $(ARGS)

lint: setup
	$(PY) -m ruff check bench backends models tests
	$(PY) -m ruff format --check bench backends models tests
	$(PY) -m mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
