"""Shared pieces of the channels-last implicit-GEMM 3×3 convolutions in the Triton kernels (convlstm_nhwc.py,
phase_fusion_nhwc.py).

A K step is one tap and a chunk of input channels (`channels_last_tap`), contiguous per pixel under one mask per
pixel. One flat, software-pipelined loop over K with one compiled body: with the taps unrolled statically the
kernels took far longer to compile.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


def ieee_float32(x: torch.Tensor) -> bool:
    """Whether float32 dots must be IEEE float32: PyTorch's own switch for convolutions decides, as it does for
    the reference model on the same GPU (cuDNN rounds to TF32 while `torch.backends.cudnn.allow_tf32` is on, its
    default). Off, or on a CPU (the interpreter), the kernels compute in IEEE float32; bf16/fp16 never ask."""
    return x.dtype == torch.float32 and not (x.is_cuda and torch.backends.cudnn.allow_tf32)


@triton.jit
def output_tile(H, W, OUT, BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr):
    """This program's tile of BLOCK_P pixels (grid axis 0) × BLOCK_O output channels (axis 1): the pixel and
    channel offsets, their masks, and the pixels' rows and columns."""
    offs_p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_o = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
    return offs_p, offs_o, offs_p < H * W, offs_o < OUT, offs_p // W, offs_p % W


@triton.jit
def patch_tile(H, W, OUT, BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_W: tl.constexpr):
    """As output_tile, for a patch of BLOCK_P // BLOCK_W rows × BLOCK_W columns of pixels (grid axis 0 runs over
    the patches row by row): the pixels' flat offsets y·W + x, the channels, their masks, rows and columns."""
    patches_x = tl.cdiv(W, BLOCK_W)
    y = (tl.program_id(0) // patches_x) * (BLOCK_P // BLOCK_W) + tl.arange(0, BLOCK_P) // BLOCK_W
    x = (tl.program_id(0) % patches_x) * BLOCK_W + tl.arange(0, BLOCK_P) % BLOCK_W
    offs_o = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
    return y * W + x, offs_o, (y < H) & (x < W), offs_o < OUT, y, x


@triton.jit
def channels_last_tap(base, step, chunks, y, x, mask_p, H, W, row, channels, BLOCK_K: tl.constexpr):
    """K step `step` of a channels-last 3×3 implicit GEMM (convlstm_nhwc.py, phase_fusion_nhwc.py): tap
    step // chunks and the (step % chunks)-th chunk of BLOCK_K of the pixels' `channels` input channels, each
    pixel's channels `row` elements after the previous pixel's at `base`. Returns the (P, K) activation tile — zero
    outside the image (the convolution's padding) and past the channels, one mask per pixel and channel — and the
    tap, channel offsets and channel mask that select the weights' rows."""
    tap = step // chunks
    offs_c = (step % chunks) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask_c = offs_c < channels
    yy = y + (tap // 3 - 1)
    xx = x + (tap % 3 - 1)
    inside = mask_p & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
    a = tl.load(base + ((yy * W + xx) * row)[:, None] + offs_c[None, :],
                mask=inside[:, None] & mask_c[None, :], other=0.0)  # fmt: skip
    return a, tap, offs_c, mask_c


@triton.jit
def accumulate(acc, a, b, FP32_IEEE: tl.constexpr):
    """acc + a @ b; float32 operands without TF32 rounding when FP32_IEEE, else on the tensor cores (TF32 for
    float32 operands)."""
    if FP32_IEEE:
        acc += tl.dot(a, b, input_precision="ieee")
    else:
        acc += tl.dot(a, b)
    return acc


def autotune(configs: list, key: list[str], prune=None):
    """triton.autotune, keeping the chosen configurations on disk where this Triton can (`cache_results`): the
    device check's steps run in separate processes and would otherwise autotune every key again (autotuning can
    take most of a step's time limit). `prune(configs, named_args)`: the configurations worth timing for a
    call."""
    import inspect

    options = {"cache_results": True} if "cache_results" in inspect.signature(triton.autotune).parameters else {}
    if prune is not None:
        options["prune_configs_by"] = {"early_config_prune": prune}
    return triton.autotune(configs=configs, key=key, **options)
