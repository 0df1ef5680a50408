"""Shared pieces of the implicit-GEMM 3×3 convolutions in the Triton kernels (convlstm.py, phase_fusion.py).

The K loop of both kernels is one flat loop over 9 taps × channel chunks with the tap a run-time value: Triton
software-pipelines that loop (num_stages), and the body is compiled once. (With the taps unrolled statically the
first device check's Triton steps ran out of time on an H200, 2026-11-26, most likely in compilation: nine copies
of four dots, which Triton lowers to FMAs unrolled over the tile for IEEE float32.)"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def shifted_tile(base, offs_k, mask_k, y, x, mask_p, H, W, tap):
    """(P, K) input values under tap `tap` of the 3×3 window of pixels (y, x), channels offs_k of a (K, H, W)
    block at `base`; zero outside the image (the convolution's zero padding)."""
    yy = y + (tap // 3 - 1)
    xx = x + (tap % 3 - 1)
    inside = mask_p & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
    return tl.load(base + offs_k[None, :] * H * W + (yy * W + xx)[:, None],
                   mask=inside[:, None] & mask_k[None, :], other=0.0)  # fmt: skip


@triton.jit
def weight_tile(base, offs_out, mask_out, offs_k, mask_k, channels, tap):
    """(K, O) weights of one tap from an (O, channels, 3, 3) block at `base`."""
    return tl.load(base + (offs_out[None, :] * channels + offs_k[:, None]) * 9 + tap,
                   mask=mask_k[:, None] & mask_out[None, :], other=0.0)  # fmt: skip


@triton.jit
def tap_and_chunk(step, k_steps, BLOCK_K: tl.constexpr):
    """Step `step` of the flat K loop -> (tap 0..8, first channel of its chunk)."""
    return step // k_steps, (step % k_steps) * BLOCK_K


@triton.jit
def accumulate(acc, a, b, FP32_IEEE: tl.constexpr):
    """acc + a @ b; in float32 without TF32 rounding when FP32_IEEE (parity with the reference)."""
    if FP32_IEEE:
        acc += tl.dot(a, b, input_precision="ieee")
    else:
        acc += tl.dot(a, b)
    return acc
