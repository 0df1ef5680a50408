"""Triton: one fused ConvLSTM step for both directions (no autograd; see cmrvsr_fast/ops/convlstm.py).

gates = conv3×3(h, W_h) + gx  (gx: the hoisted input-to-gates convolution plus bias, computed for all frames
at once by the Engine); c' = σ(f)·c + σ(i)·tanh(g); h' = σ(o)·tanh(c'). One program computes a tile of
BLOCK_P pixels × BLOCK_F hidden channels of one (direction, cine): the 3×3 convolution as an implicit GEMM over
K = F input channels × 9 taps (conv_tiles.py) into four fp32 accumulators (i, f, o, g) held in registers, then
the cell update in the epilogue. Gates never reach memory; the cell state is read and written in fp32.

Layouts (contiguous): h (D, B, F, H, W); w (D, 4F, F, 3, 3) with gate blocks (i, f, o, g); gx (D, B, 4F, H, W);
c (D, B, F, H, W) float32. D = 2 for the two directions.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .conv_tiles import accumulate, autotune, ieee_float32, im2col_tile, output_tile, weight_rows

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

_CONFIGS = [  # bf16/fp16 and TF32: tensor-core tiles
    triton.Config({"BLOCK_P": p, "BLOCK_F": f, "BLOCK_K": k}, num_warps=w, num_stages=s)
    for p, f, k, w, s in [
        (64, 32, 32, 4, 3),
        (128, 32, 32, 4, 3),  # run 3's choice for TF32 (H200, F = 64, 64²)
        (128, 64, 32, 8, 3),
        (128, 64, 64, 8, 3),  # run 3's choice for bf16: K = 9·F = 576 at F = 64 in nine steps of 64
    ]
]
# TF32 (float32 inputs on the tensor cores): 4-byte tiles, so not the largest 16-bit one (294912 bytes of shared
# memory at three stages, over sm_90's 232448: tests/test_triton_compile.py).
_TF32_CONFIGS = [c for c in _CONFIGS if c.kwargs["BLOCK_F"] * c.kwargs["BLOCK_K"] < 64 * 64]
# IEEE float32: Triton lowers these dots to FMAs unrolled over the tile; small tiles keep the code (and its
# compile time) small, and no tensor core would help them anyway.
_IEEE_CONFIGS = [
    triton.Config({"BLOCK_P": p, "BLOCK_F": f, "BLOCK_K": k}, num_warps=w, num_stages=s)
    for p, f, k, w, s in [(64, 32, 16, 4, 2), (32, 32, 16, 4, 2)]
]


@triton.jit
def _tanh(x):
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _convlstm_step_kernel(
    h_ptr, w_ptr, gx_ptr, c_ptr, h_out_ptr, c_out_ptr,
    B, F, H, W, K9,
    FP32_IEEE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    pid_db = tl.program_id(2)  # direction · B + cine
    direction = pid_db // B
    hw = H * W
    offs_p, offs_f, mask_p, mask_f, y, x = output_tile(H, W, F, BLOCK_P, BLOCK_F)
    h_base = h_ptr + pid_db.to(tl.int64) * F * hw
    w_base = w_ptr + direction.to(tl.int64) * 4 * F * K9
    gate_stride = F * K9  # one gate's (F, F, 3, 3) block

    acc_i = tl.zeros((BLOCK_P, BLOCK_F), dtype=tl.float32)
    acc_f = tl.zeros((BLOCK_P, BLOCK_F), dtype=tl.float32)
    acc_o = tl.zeros((BLOCK_P, BLOCK_F), dtype=tl.float32)
    acc_g = tl.zeros((BLOCK_P, BLOCK_F), dtype=tl.float32)
    for k0 in range(0, K9, BLOCK_K):  # K = F input channels × 9 taps, flat
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K9
        a = im2col_tile(h_base, offs_k, mask_k, y, x, mask_p, H, W)
        acc_i = accumulate(acc_i, a, weight_rows(w_base, offs_f, mask_f, offs_k, mask_k, K9), FP32_IEEE)
        acc_f = accumulate(acc_f, a, weight_rows(w_base + gate_stride, offs_f, mask_f, offs_k, mask_k, K9), FP32_IEEE)
        acc_o = accumulate(acc_o, a, weight_rows(w_base + 2 * gate_stride, offs_f, mask_f, offs_k, mask_k, K9),
                           FP32_IEEE)  # fmt: skip
        acc_g = accumulate(acc_g, a, weight_rows(w_base + 3 * gate_stride, offs_f, mask_f, offs_k, mask_k, K9),
                           FP32_IEEE)  # fmt: skip

    tile = offs_f[None, :] * hw + offs_p[:, None]  # (P, F) inside one (direction, cine) block of F·H·W
    tile_mask = mask_p[:, None] & mask_f[None, :]
    gx_tile = gx_ptr + pid_db.to(tl.int64) * 4 * F * hw + tile
    state = pid_db.to(tl.int64) * F * hw + tile
    cell_epilogue(acc_i, acc_f, acc_o, acc_g, gx_tile, F * hw, c_ptr + state, c_out_ptr + state, h_out_ptr + state,
                  tile_mask)  # fmt: skip


@triton.jit
def hoisted_gates(gx_tile, gate_stride, tile_mask):
    """The hoisted gates of one tile as four float32 tiles (i, f, o, g; gate g at gx_tile + g · gate_stride)."""
    gate_i = tl.load(gx_tile, mask=tile_mask, other=0.0).to(tl.float32)
    gate_f = tl.load(gx_tile + gate_stride, mask=tile_mask, other=0.0).to(tl.float32)
    gate_o = tl.load(gx_tile + 2 * gate_stride, mask=tile_mask, other=0.0).to(tl.float32)
    gate_g = tl.load(gx_tile + 3 * gate_stride, mask=tile_mask, other=0.0).to(tl.float32)
    return gate_i, gate_f, gate_o, gate_g


@triton.jit
def cell_update(gate_i, gate_f, gate_o, gate_g, c_tile, c_out_tile, h_out_tile, tile_mask):
    """c' = σ(f)·c + σ(i)·tanh(g), h' = σ(o)·tanh(c') from the complete gates; c in float32, h' in the output's
    dtype."""
    c = tl.load(c_tile, mask=tile_mask, other=0.0)
    c_next = tl.sigmoid(gate_f) * c + tl.sigmoid(gate_i) * _tanh(gate_g)
    h_next = tl.sigmoid(gate_o) * _tanh(c_next)
    tl.store(c_out_tile, c_next, mask=tile_mask)
    tl.store(h_out_tile, h_next.to(h_out_tile.dtype.element_ty), mask=tile_mask)


@triton.jit
def cell_epilogue(acc_i, acc_f, acc_o, acc_g, gx_tile, gate_stride, c_tile, c_out_tile, h_out_tile, tile_mask):
    """The cell update of one tile: gates = accumulators + hoisted gates (gate g at gx_tile + g · gate_stride)."""
    gx_i, gx_f, gx_o, gx_g = hoisted_gates(gx_tile, gate_stride, tile_mask)
    cell_update(acc_i + gx_i, acc_f + gx_f, acc_o + gx_o, acc_g + gx_g, c_tile, c_out_tile, h_out_tile, tile_mask)


# B in the key: the grid (and so the best tile) scales with the cines, and the choices are kept on disk.
_KEY = ["B", "F", "H", "W"]
_tuned = autotune(_CONFIGS, _KEY)(_convlstm_step_kernel)
_tuned_tf32 = autotune(_TF32_CONFIGS, _KEY)(_convlstm_step_kernel)
_tuned_ieee = autotune(_IEEE_CONFIGS, _KEY)(_convlstm_step_kernel)


def convlstm_step(
    h: torch.Tensor, w: torch.Tensor, gx: torch.Tensor, c: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the fused step; returns (h', c') in new tensors. Inputs must be contiguous (checked by the op)."""
    directions, batch, features, height, width = h.shape
    h_out = torch.empty_like(h)
    c_out = torch.empty_like(c)
    ieee = ieee_float32(h)
    # K9 = 9·F as its own argument: Triton specialises it as a multiple of 16 when it is (F = 64: 576), which
    # lets the weight rows load 16 bytes at a time.
    args = (h, w, gx, c, h_out, c_out, batch, features, height, width, 9 * features)
    if INTERPRET:  # autotuning is meaningless (and slow) under the CPU interpreter
        blocks = {"BLOCK_P": 32, "BLOCK_F": 16, "BLOCK_K": 16}
        grid = (triton.cdiv(height * width, 32), triton.cdiv(features, 16), directions * batch)
        _convlstm_step_kernel[grid](*args, FP32_IEEE=ieee, **blocks)
    else:

        def grid(meta):
            return (triton.cdiv(height * width, meta["BLOCK_P"]), triton.cdiv(features, meta["BLOCK_F"]),
                    directions * batch)  # fmt: skip

        tuned = _tuned_ieee if ieee else _tuned_tf32 if h.dtype == torch.float32 else _tuned
        tuned[grid](*args, FP32_IEEE=ieee)
    return h_out, c_out
