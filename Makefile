# The README's commands. Everything runs inside .venv, created on first use.
# The venv sees system site-packages, so a machine that already has torch (a CUDA build on a GPU host) keeps
# it; where no torch is present, the CPU build torch==2.13.0 is installed (never a pinned CUDA build).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cmrvsr-installed
# No allocator variables: the Engine keeps its own buffers, and `cmrvsr-fast train` sets glibc's allocator for
# itself (cmrvsr_fast/training/allocator.py); `make bench` measures both claims.

.PHONY: install test demo lint clean bench bench-short bench-paths bench-fig4a bench-train-cost train-default \
	device-check device-image-check

install: $(STAMP)

# CMRVSR_BUILD_CPU=1: here a failed build of the CPU kernels fails the install instead of leaving a slower package.
$(STAMP): setup.py pyproject.toml $(wildcard csrc/*.cu csrc/*.cpp csrc/*.h csrc/*.cuh csrc/cpu/*)
	test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "torch==2.13.0"
	CMRVSR_BUILD_CPU=1 $(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# The main job: a held-out phantom stack, degraded ×4, super-resolved with the embedded default weights.
demo: $(STAMP)
	$(PY) -m cmrvsr_fast demo --out demo_out --json demo_out/metrics.json

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf build dist *.egg-info cmrvsr_fast/_C*.so

# The CPU speed a user's script gets: reference vs the Engine's defaults (fp32, bf16) and the hoisted schedule,
# and the embedded default, each with and without glibc's allocator variables, interleaved in one run; paper-x4
# ×4 64×64 LR T=30, one cine and a 10-slice stack (about 25 minutes on the 2-core CPU; bench-short: one cine,
# about 4 minutes); see benchmarks/cpu_speed.py.
bench: $(STAMP)
	$(PY) benchmarks/cpu_speed.py

bench-short: $(STAMP)
	$(PY) benchmarks/cpu_speed.py --short

# Every path: reference vs Engine (eager/compiled, fp32/bf16), ONNX Runtime, AOTI; one cine and a 10-slice stack
# (about 50 minutes on the 2-core CPU); see benchmarks/bench_engine.py.
bench-paths: $(STAMP)
	$(PY) benchmarks/bench_engine.py --repeats 2

# The paper's Fig. 4a for the comparison zoo on this machine: parameters, FLOPs, FPS, latency and peak memory
# measured now (about 15 minutes on the 2-core CPU), quality from the newest committed equal-budget training
# (benchmarks/results/zoo_training_*.json). TRAIN=1 reruns that training first, for every trainable ×4 member
# (or MEMBERS="..."), BUDGET steps × clips each: hours on the CPU (benchmarks/zoo_train.py).
TRAIN ?= 0
BUDGET ?= 300x4
MEMBERS ?=
bench-fig4a: $(STAMP)
ifeq ($(TRAIN),1)
	$(PY) benchmarks/zoo_train.py --budget $(BUDGET) $(if $(MEMBERS),--members $(MEMBERS))
endif
	$(PY) benchmarks/fps_vs_params.py

# On a GPU: the rows that decide `auto` and the targets, the untried tiles, the GPU tests (--run first, < 6 min;
# --run later: the rest), the JSON rewritten after every step. On the device tool the one line to paste is in
# docs/benchmarks.md (no make there: no network). On a CPU, `$(PY) benchmarks/device_check.py --cpu-rehearsal
# --out /tmp/dc` tests the script itself. ARGS passes options, e.g. make device-check ARGS="--run later".
device-check: $(STAMP)
	$(PY) benchmarks/device_check.py $(ARGS)

# The GPU image's torch 2.11 and Triton 3.6 on this CPU: kernel compilation, interpreter parity and the device
# check's rehearsal under the versions the lent GPU runs (its own venv; ~8 min, ~3 GB of downloads).
device-image-check:
	bash benchmarks/device_image_check.sh

# Training cost per step of the CPU and paper presets (the paper's recipe, docs/training.md); see benchmarks/train_cost.py.
bench-train-cost: $(STAMP)
	$(PY) benchmarks/train_cost.py --preset lite-x4 --preset paper-x4 --steps 2

# How the embedded defaults are made (2-core CPU), from nothing but this repository: lite-x4 on 192 synthetic
# cases (docs/training-data.md) for 40 minutes; then ×2 and ×3 started from its trunk, side by side on one core
# each for 10 minutes; then ×2 resumed on both cores until 50 minutes in all (×2 needs the longest training to
# beat Lanczos); each embedded with its held-out quality measured. About two hours; not part of the tests.
# RUNS=DIR keeps the runs elsewhere; the *_MINUTES variables shorten a trial of the recipe.
RUNS ?= runs
X4_MINUTES ?= 40
SIDE_MINUTES ?= 10
X2_MINUTES ?= 50
TRAIN_FLAGS := --data synth:192 --batch 4 --lr 4e-4 --seed 0 --steps 100000
train-default: $(STAMP)
	$(PY) -m cmrvsr_fast train --preset lite-x4 $(TRAIN_FLAGS) --minutes $(X4_MINUTES) \
		--validate-every 200 --out $(RUNS)/default-x4
	$(PY) benchmarks/embed_default.py $(RUNS)/default-x4
	pids=; for r in 2 3; do \
		OMP_NUM_THREADS=1 $(PY) -m cmrvsr_fast train --preset lite-x$$r $(TRAIN_FLAGS) \
			--minutes $(SIDE_MINUTES) --validate-every 100 --init-from $(RUNS)/default-x4/best.safetensors \
			--out $(RUNS)/default-x$$r & \
		pids="$$pids $$!"; \
	done; for pid in $$pids; do wait $$pid || exit 1; done
	$(PY) -m cmrvsr_fast train --preset lite-x2 $(TRAIN_FLAGS) --minutes $(X2_MINUTES) \
		--validate-every 200 --resume --out $(RUNS)/default-x2
	$(PY) benchmarks/embed_default.py $(RUNS)/default-x2
	$(PY) benchmarks/embed_default.py $(RUNS)/default-x3
