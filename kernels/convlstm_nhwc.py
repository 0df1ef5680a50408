"""Triton, experimental: the fused ConvLSTM step (kernels/convlstm.py) in a channels-last layout.

Not used by the Engine. The device check times it beside the NCHW kernel, so that one GPU run can say whether the
layout is worth moving the Engine's recurrence to (GPU_NOTES.md). Why it might be: in NCHW the im2col tile of a
K step is a gather, one shifted pixel run per (channel, tap) with a mask per element; here a K step is one tap and
a chunk of channels, contiguous per pixel, under one mask per pixel — 16-byte loads — and the weights, packed once
as (tap, input channel, gate · F + hidden channel), load contiguously along the output channels. The hoisted gates
come channels-last from the Engine's channels-last input convolution, with no transposing copy.

Layouts (contiguous): h (D, B, H, W, F); w (D, 9, F, 4F) from `pack_weights`; gx (D, B, H, W, 4F) with gate
blocks (i, f, o, g); c (D, B, H, W, F) float32.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .conv_tiles import accumulate, ieee_float32
from .convlstm import cell_epilogue

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

_CONFIGS = [
    triton.Config({"BLOCK_P": p, "BLOCK_F": f, "BLOCK_K": k}, num_warps=w, num_stages=s)
    for p, f, k, w, s in [
        (64, 32, 32, 4, 3),
        (128, 32, 32, 4, 3),
        (128, 64, 32, 8, 3),
        (128, 32, 64, 4, 3),
        (128, 64, 64, 8, 3),
    ]
]
_IEEE_CONFIGS = [
    triton.Config({"BLOCK_P": p, "BLOCK_F": f, "BLOCK_K": k}, num_warps=w, num_stages=s)
    for p, f, k, w, s in [(64, 32, 16, 4, 2), (32, 32, 16, 4, 2)]
]


def pack_weights(w: torch.Tensor) -> torch.Tensor:
    """(D, 4F, F, 3, 3) recurrent weights -> (D, 9, F, 4F): row tap · F + input channel, column gate · F + hidden."""
    directions, gates, features = w.shape[:3]
    return w.permute(0, 3, 4, 2, 1).reshape(directions, 9, features, gates).contiguous()


@triton.jit
def _step_kernel(
    h_ptr, w_ptr, gx_ptr, c_ptr, h_out_ptr, c_out_ptr,
    B, F, H, W,
    FP32_IEEE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    pid_p = tl.program_id(0)
    pid_f = tl.program_id(1)
    pid_db = tl.program_id(2)  # direction · B + cine
    direction = pid_db // B
    hw = H * W
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_f = pid_f * BLOCK_F + tl.arange(0, BLOCK_F)
    mask_p = offs_p < hw
    mask_f = offs_f < F
    y = offs_p // W
    x = offs_p % W
    h_base = h_ptr + pid_db.to(tl.int64) * hw * F
    w_base = w_ptr + direction.to(tl.int64) * 9 * F * 4 * F

    acc_i = tl.zeros((BLOCK_P, BLOCK_F), dtype=tl.float32)
    acc_f = tl.zeros((BLOCK_P, BLOCK_F), dtype=tl.float32)
    acc_o = tl.zeros((BLOCK_P, BLOCK_F), dtype=tl.float32)
    acc_g = tl.zeros((BLOCK_P, BLOCK_F), dtype=tl.float32)
    chunks = tl.cdiv(F, BLOCK_K)
    for step in range(0, 9 * chunks):  # one tap and one chunk of input channels per step
        tap = step // chunks
        offs_c = (step % chunks) * BLOCK_K + tl.arange(0, BLOCK_K)
        mask_c = offs_c < F
        yy = y + (tap // 3 - 1)
        xx = x + (tap % 3 - 1)
        inside = mask_p & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
        a = tl.load(h_base + ((yy * W + xx) * F)[:, None] + offs_c[None, :],
                    mask=inside[:, None] & mask_c[None, :], other=0.0)  # fmt: skip
        rows = w_base + (tap * F + offs_c)[:, None] * (4 * F) + offs_f[None, :]
        mask_w = mask_c[:, None] & mask_f[None, :]
        acc_i = accumulate(acc_i, a, tl.load(rows, mask=mask_w, other=0.0), FP32_IEEE)
        acc_f = accumulate(acc_f, a, tl.load(rows + F, mask=mask_w, other=0.0), FP32_IEEE)
        acc_o = accumulate(acc_o, a, tl.load(rows + 2 * F, mask=mask_w, other=0.0), FP32_IEEE)
        acc_g = accumulate(acc_g, a, tl.load(rows + 3 * F, mask=mask_w, other=0.0), FP32_IEEE)

    tile_mask = mask_p[:, None] & mask_f[None, :]
    gx_tile = gx_ptr + pid_db.to(tl.int64) * hw * 4 * F + (offs_p * 4 * F)[:, None] + offs_f[None, :]
    state = pid_db.to(tl.int64) * hw * F + (offs_p * F)[:, None] + offs_f[None, :]
    cell_epilogue(acc_i, acc_f, acc_o, acc_g, gx_tile, F, c_ptr + state, c_out_ptr + state, h_out_ptr + state,
                  tile_mask)  # fmt: skip


_tuned = triton.autotune(configs=_CONFIGS, key=["F", "H", "W"])(_step_kernel)
_tuned_ieee = triton.autotune(configs=_IEEE_CONFIGS, key=["F", "H", "W"])(_step_kernel)


def convlstm_step_nhwc(
    h: torch.Tensor, w_packed: torch.Tensor, gx: torch.Tensor, c: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of every direction, channels-last (layouts above); returns (h', c') in new tensors."""
    directions, batch, height, width, features = h.shape
    expected = {"w_packed": (w_packed, (directions, 9, features, 4 * features)),
                "gx": (gx, (directions, batch, height, width, 4 * features)), "c": (c, tuple(h.shape))}  # fmt: skip
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape or not tensor.is_contiguous():
            raise ValueError(f"convlstm_step_nhwc: {name} must be contiguous {shape}, got {tuple(tensor.shape)}")
    h, c_out = h.contiguous(), torch.empty_like(c)
    h_out = torch.empty_like(h)
    ieee = ieee_float32(h)
    args = (h, w_packed, gx, c, h_out, c_out, batch, features, height, width)
    if INTERPRET:
        grid = (triton.cdiv(height * width, 32), triton.cdiv(features, 16), directions * batch)
        _step_kernel[grid](*args, FP32_IEEE=ieee, BLOCK_P=32, BLOCK_F=16, BLOCK_K=16)
    else:

        def grid(meta):
            return (triton.cdiv(height * width, meta["BLOCK_P"]), triton.cdiv(features, meta["BLOCK_F"]),
                    directions * batch)  # fmt: skip

        (_tuned_ieee if ieee else _tuned)[grid](*args, FP32_IEEE=ieee)
    return h_out, c_out
