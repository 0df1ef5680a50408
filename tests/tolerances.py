"""The one tolerance table for every fast path (Engine, Triton and CUDA kernels, exported runtimes, the
micro-benchmarks): relative L2 error against the reference, by the fast path's compute dtype (DESIGN.md)."""

from __future__ import annotations

import torch

RELATIVE_L2 = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ in float64."""
    return float((a.double() - b.double()).norm() / b.double().norm())
