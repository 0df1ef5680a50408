"""Micro-benchmarks of the two fused ops, per backend available on this machine, at paper-x4's shapes (F = 64,
64×64 LR; one cine and a 10-slice stack; T + 2n = 42 extended frames), with parity against the reference
asserted in the same test (tolerances: tests/tolerances.py).

    pytest benchmarks/ --benchmark-only [--benchmark-json out.json]

Triton runs only on a GPU here: under TRITON_INTERPRET=1 on a CPU it is a correctness tool, not a speed.
"""

from __future__ import annotations

import os

import pytest
import torch
from kernel_helpers import fusion_case, random_layer
from tolerances import RELATIVE_L2, ieee_float32, relative_l2

from cmrvsr_fast.ops.backends import cuda_unavailable_reason, triton_unavailable_reason
from cmrvsr_fast.ops.convlstm import convlstm_layer, convlstm_layer_ref
from cmrvsr_fast.ops.phase_fusion import window_conv3x3

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ON_GPU = DEVICE.type == "cuda"
FEATURES, SIZE, EXTENDED_FRAMES = 64, 64, 42
DTYPES = [torch.float32, torch.bfloat16] if ON_GPU else [torch.float32]
ROUNDS = 20 if ON_GPU else 3


@pytest.fixture(autouse=True)
def _float32_means_ieee():
    with ieee_float32():  # tests/tolerances.py says why
        yield


def skip_unless_available(backend: str) -> None:
    if backend == "triton" and not ON_GPU and os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("Triton under the CPU interpreter is a correctness tool, not a speed")
    unavailable = {"triton": triton_unavailable_reason, "cuda": cuda_unavailable_reason}
    reason = unavailable[backend](DEVICE) if backend in unavailable else None
    if reason:
        pytest.skip(f"backend {backend}: {reason}")


def timed(benchmark, fn, *args, **kwargs):
    def run():
        out = fn(*args, **kwargs)
        if ON_GPU:
            torch.cuda.synchronize()
        return out

    return benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("slices", [1, 10] if ON_GPU else [1])
@pytest.mark.parametrize("backend", ["torch", "triton", "cuda"])
def test_convlstm_layer(benchmark, backend: str, slices: int, dtype: torch.dtype) -> None:
    skip_unless_available(backend)
    frames = EXTENDED_FRAMES if ON_GPU else 4  # (a whole layer of 42 steps is minutes on a CPU)
    inputs = random_layer(frames, slices, FEATURES, SIZE, SIZE, dtype=dtype)
    expected = convlstm_layer_ref(*(t.float() for t in inputs))
    inputs = [t.to(DEVICE) for t in inputs]
    benchmark.extra_info.update(backend=backend, frames=frames, slices=slices, dtype=str(dtype))
    outputs = timed(benchmark, convlstm_layer, *inputs, backend=backend)
    for out, ref in zip(outputs, expected, strict=True):
        assert relative_l2(out.float().cpu(), ref) <= RELATIVE_L2[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("slices", [1, 10] if ON_GPU else [1])
@pytest.mark.parametrize("backend", ["torch", "triton", "cuda"])
def test_phase_fusion(benchmark, backend: str, slices: int, dtype: torch.dtype) -> None:
    skip_unless_available(backend)
    (x, table, w, bias, codes, maps), expected = fusion_case(EXTENDED_FRAMES, slices, FEATURES, SIZE, SIZE)
    inputs = [x.to(dtype), table, w.to(dtype), bias, codes, maps]
    inputs = [t.to(DEVICE) for t in inputs]
    benchmark.extra_info.update(backend=backend, frames=EXTENDED_FRAMES, slices=slices, dtype=str(dtype))
    out = timed(benchmark, window_conv3x3, *inputs, backend=backend)
    assert relative_l2(out.float().cpu(), expected) <= RELATIVE_L2[dtype]
