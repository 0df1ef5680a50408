# The README's commands. Everything runs inside .venv, created on first use.
# The venv sees system site-packages, so a machine that already has torch (a CUDA build on a GPU host) keeps
# it; where no torch is present, the CPU build torch==2.13.0 is installed (never a pinned CUDA build).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cmrvsr-installed

.PHONY: install test lint clean bench-train-cost

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

# Training cost per step of the CPU and paper presets (SPEC §3 recipe); see benchmarks/train_cost.py.
MALLOC_ENV := MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=1073741824
bench-train-cost: $(STAMP)
	$(MALLOC_ENV) $(PY) benchmarks/train_cost.py --preset lite-x4 --preset paper-x4 --steps 2
