#!/usr/bin/env bash
# The GPU image's library versions on this CPU, before a GPU is lent: the device machine runs older torch and
# Triton than the project's venv (benchmarks/GPU_NOTES.md), and a kernel can compile cleanly under one and not the
# other (a TMA tile that spills under the older Triton only, a pipeline that ptxas serialises under the newer one:
# docs/performance.md).
#
# Checks, in a venv of their own with those versions (and the image's Python 3.12 where this machine has it) on a
# clone of the committed HEAD (an editable install writes build products into its tree): the sm_90/sm_80
# compilation and ptxas checks, the interpreter parity tests of every kernel, the ops' tracing, and the device
# check's CPU rehearsal, which must finish every step. PyPI's torch 2.11 is a CUDA build (~3 GB with its CUDA
# libraries); it runs on the CPU here. numpy < 2.4: Triton 3.6's interpreter converts 1-element arrays to
# Python ints, which numpy 2.4 refuses. setuptools: the rehearsal's offline build (no build isolation) needs it,
# and a Python 3.12 venv starts without it.
#
#   bash benchmarks/device_image_check.sh [WORKDIR]      (default /tmp/cmrvsr-device-image; ~8 min)
#   PYTHON=/path/to/python3.12 bash benchmarks/device_image_check.sh   (the interpreter for the venv)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/cmrvsr-device-image}
python=${PYTHON:-}
if [ -z "$python" ]; then  # (a pyenv shim may exist for a version that is not selected: run it to know)
    if python3.12 -c "" 2>/dev/null; then python=python3.12; else python=python3; fi
fi
mkdir -p "$work"
test -x "$work/venv/bin/python" || "$python" -m venv "$work/venv"
rm -rf "$work/src" "$work/rehearsal"
git clone -q "$PWD" "$work/src"
cd "$work/src"
pins=("torch==2.11.0" "triton==3.6.0" "numpy<2.4" setuptools)
"$work/venv/bin/python" -m pip install -q "${pins[@]}"
"$work/venv/bin/python" -m pip install -q -e ".[dev]" "${pins[@]}"
"$work/venv/bin/python" -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch',
torch.__version__, 'triton', triton.__version__)"
"$work/venv/bin/python" -m pytest -q -p no:cacheprovider tests/test_triton_compile.py tests/test_convlstm.py \
    tests/test_phase_fusion.py tests/test_engine.py tests/test_ops_tracing.py
"$work/venv/bin/python" benchmarks/device_check.py --cpu-rehearsal --out "$work/rehearsal"
# The device check records a failed step and goes on (a GPU run keeps what the other steps measured): here any
# step short of ok fails the check.
"$work/venv/bin/python" - "$work/rehearsal/device_check.json" <<'EOF'
import json
import sys

steps = json.load(open(sys.argv[1]))["steps"]
failed = [f"{step['step']}: {step['status']}" for step in steps if step["status"] != "ok"]
if failed:
    sys.exit("device-image-check: the rehearsal's steps did not all finish: " + "; ".join(failed))
print(f"device-image-check: every one of the rehearsal's {len(steps)} steps ok")
EOF
