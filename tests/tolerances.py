"""The one tolerance table for every fast path (Engine, Triton and CUDA kernels, exported runtimes, the
micro-benchmarks): relative L2 error against the reference, by the fast path's compute dtype (DESIGN.md)."""

from __future__ import annotations

import contextlib

import torch

RELATIVE_L2 = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}
# float32 inputs through TF32 tensor cores (PyTorch's default for cuDNN convolutions, which the Triton kernels follow
# on a GPU; kernels/conv_tiles.ieee_float32): 10 mantissa bits, errors near 3e-4 for these reductions.
TF32_RELATIVE_L2 = 2e-3


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ in float64."""
    return float((a.double() - b.double()).norm() / b.double().norm())


@contextlib.contextmanager
def ieee_float32():
    """The float32 row above is a contract about IEEE float32: PyTorch lets cuDNN convolutions round their inputs
    to TF32 by default (errors near 3e-4), which would hide a wrong fast path in that rounding. Tests and the
    micro-benchmarks run inside this; the model benchmarks keep PyTorch's default (a faster reference)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
