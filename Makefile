# The README's commands. Everything runs inside .venv, created on first use.
# The venv sees system site-packages, so a machine that already has torch (a CUDA build on a GPU host) keeps
# it; where no torch is present, the CPU build torch==2.13.0 is installed (never a pinned CUDA build).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cmrvsr-installed

.PHONY: install test lint clean

install: $(STAMP)

$(STAMP): setup.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "torch==2.13.0"
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf build dist *.egg-info cmrvsr_fast/_C*.so
