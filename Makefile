# `make demo` and `make test` work from a fresh clone with only Python >= 3.10.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel; override e.g. TORCH_SPEC='torch==2.5.1 --index-url ...' for CUDA builds.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test setup setup-dev lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch is installed only when it does not import, so an existing (e.g. CUDA) build is kept.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed
setup-dev: $(VENV)/.installed-dev

demo: setup
	$(VENV)/bin/unmask demo

lint: setup-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

test: setup-dev lint
	$(VENV)/bin/pytest -q

bench: setup
	$(VENV)/bin/unmask bench train

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
