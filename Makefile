# Two entry points for a fresh machine: `make serve` and `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test lint bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q -e tests/plugins/landscape_toy_plugin
	touch $@

serve: $(VENV)/.installed
	$(VENV)/bin/landscape serve --host $(HOST) --port $(PORT) --demo

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(VENV)/.installed-dev
	bash scripts/ensure-test-tools.sh
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) -m bench.surface

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-artifacts
