#!/usr/bin/env bash
# The GPU image's library versions on this CPU, before a GPU is lent: the device machine runs torch 2.11 and
# Triton 3.6 (benchmarks/GPU_NOTES.md), the project's venv the newest (torch 2.13, Triton 3.9 on 2026-11-26), and
# a kernel can compile cleanly under one and not the other (2026-11-26: a TMA tile that Triton 3.9 compiles with
# no spills spills 20 bytes under 3.6; a wgmma pipeline that ptxas serialises under 3.9 is not under 3.6).
#
# Checks, in a venv of their own with those versions and a clone of the committed HEAD (an editable install
# builds the extension in place, against that torch): the sm_90/sm_80 compilation and ptxas checks, the
# interpreter parity tests of every kernel, the ops' tracing, and the device check's CPU rehearsal.
# PyPI's torch 2.11 is a CUDA build (~3 GB with its CUDA libraries); it runs on the CPU here. numpy < 2.4:
# Triton 3.6's interpreter converts 1-element arrays to Python ints, which numpy 2.4 refuses.
#
#   bash benchmarks/device_image_check.sh [WORKDIR]      (default /tmp/cmrvsr-device-image; ~8 min)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/cmrvsr-device-image}
python=${PYTHON:-python3}
mkdir -p "$work"
test -x "$work/venv/bin/python" || "$python" -m venv "$work/venv"
rm -rf "$work/src" "$work/rehearsal"
git clone -q "$PWD" "$work/src"
cd "$work/src"
"$work/venv/bin/python" -m pip install -q "torch==2.11.0" "triton==3.6.0" "numpy<2.4"
"$work/venv/bin/python" -m pip install -q -e ".[dev]" "torch==2.11.0" "triton==3.6.0" "numpy<2.4"
"$work/venv/bin/python" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
"$work/venv/bin/python" -m pytest -q -p no:cacheprovider tests/test_triton_compile.py tests/test_convlstm.py \
    tests/test_phase_fusion.py tests/test_engine.py tests/test_ops_tracing.py
"$work/venv/bin/python" benchmarks/device_check.py --cpu-rehearsal --out "$work/rehearsal"
