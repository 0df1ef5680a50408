"""Shared pieces of the implicit-GEMM 3×3 convolutions in the Triton kernels (convlstm.py, phase_fusion.py)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def shifted_tile(base, offs_k, mask_k, y, x, mask_p, H, W, tap: tl.constexpr):
    """(P, K) input values under tap `tap` of the 3×3 window of pixels (y, x), channels offs_k of a (K, H, W)
    block at `base`; zero outside the image (the convolution's zero padding)."""
    yy = y + (tap // 3 - 1)
    xx = x + (tap % 3 - 1)
    inside = mask_p & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
    return tl.load(base + offs_k[None, :] * H * W + (yy * W + xx)[:, None],
                   mask=inside[:, None] & mask_k[None, :], other=0.0)  # fmt: skip


@triton.jit
def weight_tile(base, offs_out, mask_out, offs_k, mask_k, channels, tap: tl.constexpr):
    """(K, O) weights of one tap from an (O, channels, 3, 3) block at `base`."""
    return tl.load(base + (offs_out[None, :] * channels + offs_k[:, None]) * 9 + tap,
                   mask=mask_k[:, None] & mask_out[None, :], other=0.0)  # fmt: skip


@triton.jit
def accumulate(acc, a, b, FP32_IEEE: tl.constexpr):
    """acc + a @ b; in float32 without TF32 rounding when FP32_IEEE (parity with the reference)."""
    if FP32_IEEE:
        acc += tl.dot(a, b, input_precision="ieee")
    else:
        acc += tl.dot(a, b)
    return acc
