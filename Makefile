# Two entry points for a fresh machine: `make serve` and `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test test-fast lint bench clean

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

# ruff (check, format) and mypy, as the pre-commit hooks run them
lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: $(VENV)/.installed-dev lint
	bash scripts/ensure-test-tools.sh
	$(PY) -m pytest

# the edit loop: lint and every test not marked slow or browser (a few minutes)
test-fast: $(VENV)/.installed-dev lint
	$(PY) -m pytest -m "not slow and not browser"

# on a CUDA machine the GPU benchmark (ResNet-56, 50k CIFAR-shaped samples, a few minutes)
bench: $(VENV)/.installed
	if $(PY) -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then \
		$(PY) -m bench.surface --device cuda; else $(PY) -m bench.surface; fi

# on a CUDA box: one prepared check of compiler, GPU tests, correctness, memory, speed, a surface,
# a killed worker, the service over REST and a long-lived worker (needs torch, numpy, scipy,
# scikit-learn, h5py, pytest — not the venv; the service step skips without the web stack);
# gpu-check.jsonl (a line per finished step) and gpu-check.json under test-artifacts/gpu-check
.PHONY: gpu-check
gpu-check:
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) scripts/gpu-check.py --device cuda --out test-artifacts/gpu-check

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-artifacts
