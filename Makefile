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

# on a CUDA machine the GPU benchmark (ResNet-56, 50k CIFAR-shaped samples, a few minutes)
bench: $(VENV)/.installed
	if $(PY) -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then \
		$(PY) -m bench.surface --device cuda; else $(PY) -m bench.surface; fi

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-artifacts
