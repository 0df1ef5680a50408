"""Triton: the fused ConvLSTM step (kernels/convlstm.py) in a channels-last layout, and a whole layer's
recurrence through it without a copy per step.

Why channels-last: in NCHW the im2col tile of a K step is a gather, one shifted pixel run per (channel, tap) with
a mask per element; here a K step is one tap and a chunk of channels, contiguous per pixel, under one mask per
pixel — 16-byte loads — and the weights, packed as (tap, input channel, gate · F + hidden channel) (a 0.6 MB
permutation per layer call at F = 64), load contiguously along the output channels. On an H200 (device check
run 3, 2026-11-26) the bf16 step took 0.102 ms against the NCHW kernel's 0.155 ms and PyTorch's 0.591 (2
directions × 10 cines, F = 64, 64²).

Why a layer launcher: the Engine's hoisted gates come from a channels-last convolution over every frame (one per
direction), and a step reads its frame's gates and the previous hidden state and writes the new one at offsets
into those sequence buffers: no stack of the two directions' gates, no contiguous copy, no scatter of h into the
outputs — in run 3 those copies cost about as much as the step kernel itself. Run 4 (H200): 0.102 ms per step
for a 10-cine layer, against 0.72 ms for the same steps as PyTorch ops with the copies.

Addressing (elements): a tensor with pixels `row` elements apart, (cine, y, x, channel) at
base + cine · H·W·row + (y·W + x) · row + channel; direction d reads h(t−1) at h{d}_ptr + h_off_d, its gates at
gx{d}_ptr + gx_off_d (gate blocks i, f, o, g, F channels each) and writes h(t) at out{d}_ptr + out_off_d (the
step passes one tensor twice, with direction 1's offsets past direction 0's block; the layer each direction's
own buffers). The cell state c (D, B, H, W, F) float32 is read from c_ptr and written to c_out_ptr.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .conv_tiles import accumulate, autotune, ieee_float32, output_tile
from .convlstm import cell_update, hoisted_gates

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

# bf16/fp16 and TF32 tiles. Run 3 (H200) chose (128, 64, 64, 8 warps) for bf16 and (128, 32|64, 32) for TF32 in
# both layouts; the smaller tiles stay for GPUs with fewer SMs and for small images. GATES_FIRST: whether the
# accumulators start as the hoisted gates (loaded before the K loop, beside its first copies) or get them added
# after it (loads the epilogue waits for); offered for the two tiles that run 4's choice and ptxas favour, so that
# the autotuner measures both on the GPU (not yet timed: added 2026-11-26 after run 4).
_CONFIGS = [
    triton.Config({"BLOCK_P": p, "BLOCK_F": f, "BLOCK_K": k, "GATES_FIRST": first}, num_warps=w, num_stages=s)
    for p, f, k, w, s, first in [
        (64, 32, 32, 4, 3, False),
        (128, 32, 32, 4, 3, False),
        (128, 64, 64, 8, 3, False),  # run 4's choice for bf16: 255 registers, 147 KB of shared memory, one CTA/SM
        (64, 32, 64, 4, 3, False),  # ~157 registers, 72 KB: up to three CTAs per SM (ptxas, test_triton_compile.py)
        (128, 32, 64, 8, 3, False),  # ~165 registers, 96 KB: one CTA per SM, with half the accumulators of the above
        (128, 64, 64, 8, 3, True),
        (64, 32, 64, 4, 3, True),
    ]
]
# TF32: 4-byte tiles, so not the largest 16-bit one (over sm_90's shared memory: tests/test_triton_compile.py).
_TF32_CONFIGS = [c for c in _CONFIGS if c.kwargs["BLOCK_F"] * c.kwargs["BLOCK_K"] < 64 * 64]
_IEEE_CONFIGS = [
    triton.Config({"BLOCK_P": p, "BLOCK_F": f, "BLOCK_K": k, "GATES_FIRST": False}, num_warps=w, num_stages=s)
    for p, f, k, w, s in [(64, 32, 16, 4, 2), (32, 32, 16, 4, 2)]
]
# Under the interpreter (CPU tests): one small tile, no autotuning; the tests set GATES_FIRST both ways.
INTERPRETER_CONFIG = {"BLOCK_P": 32, "BLOCK_F": 16, "BLOCK_K": 16, "GATES_FIRST": False}
_KEY = ["B", "F", "H", "W", "H_ROW", "GX_ROW", "FIRST"]  # B: the grid scales with the cines


def pack_weights(w: torch.Tensor) -> torch.Tensor:
    """(D, 4F, F, 3, 3) recurrent weights -> (D, 9, F, 4F): row tap · F + input channel, column gate · F + hidden."""
    directions, gates, features = w.shape[:3]
    return w.permute(0, 3, 4, 2, 1).reshape(directions, 9, features, gates).contiguous()


@triton.jit
def _step_kernel(
    h0_ptr, h1_ptr, w_ptr, gx0_ptr, gx1_ptr, c_ptr, out0_ptr, out1_ptr, c_out_ptr,
    h_off0, h_off1, gx_off0, gx_off1, out_off0, out_off1,
    B, F, H, W, H_ROW, GX_ROW,
    FIRST: tl.constexpr, FP32_IEEE: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_K: tl.constexpr, GATES_FIRST: tl.constexpr,
):  # fmt: skip
    pid_db = tl.program_id(2)  # direction · B + cine
    direction = pid_db // B
    cine = (pid_db % B).to(tl.int64)
    hw = H * W
    offs_p, offs_f, mask_p, mask_f, y, x = output_tile(H, W, F, BLOCK_P, BLOCK_F)

    if direction == 0:  # each direction's tensors: h(t−1), the hoisted gates, h(t)
        h_ptr = h0_ptr + h_off0.to(tl.int64)
        gx_ptr = gx0_ptr + gx_off0.to(tl.int64)
        out_ptr = out0_ptr + out_off0.to(tl.int64)
    else:
        h_ptr = h1_ptr + h_off1.to(tl.int64)
        gx_ptr = gx1_ptr + gx_off1.to(tl.int64)
        out_ptr = out1_ptr + out_off1.to(tl.int64)
    tile_mask = mask_p[:, None] & mask_f[None, :]
    gx_base = gx_ptr + cine * hw * GX_ROW
    if GATES_FIRST:  # the accumulators start as the hoisted gates: their loads overlap the K loop's first copies
        gx_tile = gx_base + (offs_p * GX_ROW)[:, None] + offs_f[None, :]
        acc_i, acc_f, acc_o, acc_g = hoisted_gates(gx_tile, F, tile_mask)
    else:  # ... or are added after the K loop (an autotuning choice: which is faster is the GPU's to say)
        acc_i = tl.zeros((BLOCK_P, BLOCK_F), dtype=tl.float32)
        acc_f = tl.zeros((BLOCK_P, BLOCK_F), dtype=tl.float32)
        acc_o = tl.zeros((BLOCK_P, BLOCK_F), dtype=tl.float32)
        acc_g = tl.zeros((BLOCK_P, BLOCK_F), dtype=tl.float32)
    if not FIRST:  # h(t−1) = 0 at the first step: the gates are the hoisted ones alone
        h_base = h_ptr + cine * hw * H_ROW
        w_base = w_ptr + direction.to(tl.int64) * 9 * F * 4 * F
        chunks = tl.cdiv(F, BLOCK_K)
        for step in range(0, 9 * chunks):  # one tap and one chunk of input channels per step
            tap = step // chunks
            offs_c = (step % chunks) * BLOCK_K + tl.arange(0, BLOCK_K)
            mask_c = offs_c < F
            yy = y + (tap // 3 - 1)
            xx = x + (tap % 3 - 1)
            inside = mask_p & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
            a = tl.load(h_base + ((yy * W + xx) * H_ROW)[:, None] + offs_c[None, :],
                        mask=inside[:, None] & mask_c[None, :], other=0.0)  # fmt: skip
            rows = w_base + (tap * F + offs_c)[:, None] * (4 * F) + offs_f[None, :]
            mask_w = mask_c[:, None] & mask_f[None, :]
            acc_i = accumulate(acc_i, a, tl.load(rows, mask=mask_w, other=0.0), FP32_IEEE)
            acc_f = accumulate(acc_f, a, tl.load(rows + F, mask=mask_w, other=0.0), FP32_IEEE)
            acc_o = accumulate(acc_o, a, tl.load(rows + 2 * F, mask=mask_w, other=0.0), FP32_IEEE)
            acc_g = accumulate(acc_g, a, tl.load(rows + 3 * F, mask=mask_w, other=0.0), FP32_IEEE)

    if not GATES_FIRST:  # (the gate pointers computed here, not kept in registers through the K loop)
        gx_tile = gx_base + (offs_p * GX_ROW)[:, None] + offs_f[None, :]
        gx_i, gx_f, gx_o, gx_g = hoisted_gates(gx_tile, F, tile_mask)
        acc_i, acc_f, acc_o, acc_g = acc_i + gx_i, acc_f + gx_f, acc_o + gx_o, acc_g + gx_g
    h_out_tile = out_ptr + cine * hw * H_ROW + (offs_p * H_ROW)[:, None] + offs_f[None, :]
    state = pid_db.to(tl.int64) * hw * F + (offs_p * F)[:, None] + offs_f[None, :]
    cell_update(acc_i, acc_f, acc_o, acc_g, c_ptr + state, c_out_ptr + state, h_out_tile, tile_mask)


_tuned = autotune(_CONFIGS, _KEY)(_step_kernel)
_tuned_tf32 = autotune(_TF32_CONFIGS, _KEY)(_step_kernel)
_tuned_ieee = autotune(_IEEE_CONFIGS, _KEY)(_step_kernel)


def _launch(args: tuple, directions: int, batch: int, features: int, height: int, width: int, first: bool,
            ieee: bool, config: triton.Config | None = None) -> None:  # fmt: skip
    """Autotuned on a GPU; one given configuration (tests, per-tile timing) or the interpreter's small tile."""
    if config is None and INTERPRET:  # autotuning is meaningless (and slow) under the CPU interpreter
        config = triton.Config(INTERPRETER_CONFIG)
    if config is not None:
        blocks = config.kwargs
        grid = (triton.cdiv(height * width, blocks["BLOCK_P"]), triton.cdiv(features, blocks["BLOCK_F"]),
                directions * batch)  # fmt: skip
        _step_kernel[grid](*args, FIRST=first, FP32_IEEE=ieee, **blocks, num_warps=config.num_warps,
                           num_stages=config.num_stages)  # fmt: skip
        return

    def grid(meta):
        return (triton.cdiv(height * width, meta["BLOCK_P"]), triton.cdiv(features, meta["BLOCK_F"]),
                directions * batch)  # fmt: skip

    tuned = _tuned_ieee if ieee else _tuned_tf32 if args[0].dtype == torch.float32 else _tuned
    tuned[grid](*args, FIRST=first, FP32_IEEE=ieee)


def convlstm_step_nhwc(
    h: torch.Tensor, w_packed: torch.Tensor, gx: torch.Tensor, c: torch.Tensor, config: triton.Config | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of D ≤ 2 directions, channels-last: h (D, B, H, W, F), w_packed (D, 9, F, 4F) from
    `pack_weights`, gx (D, B, H, W, 4F), c (D, B, H, W, F) float32, all contiguous; returns new (h', c').
    `config`: one of the autotuning configurations instead of the autotuner's choice (tests, per-tile timing)."""
    directions, batch, height, width, features = h.shape
    expected = {"h": (h, tuple(h.shape)), "w_packed": (w_packed, (directions, 9, features, 4 * features)),
                "gx": (gx, (directions, batch, height, width, 4 * features)), "c": (c, tuple(h.shape))}  # fmt: skip
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape or not tensor.is_contiguous():
            raise ValueError(f"convlstm_step_nhwc: {name} must be contiguous {shape}, got {tuple(tensor.shape)}")
    if directions > 2:
        raise ValueError(f"convlstm_step_nhwc: at most 2 directions, got {directions}")
    h_out, c_out = torch.empty_like(h), torch.empty_like(c)
    block = batch * height * width * features  # one direction's (B, H, W, F)
    offsets = (0, block, 0, 4 * block, 0, block)  # h, gx, out: direction 1 follows direction 0
    args = (h, h, w_packed, gx, gx, c, h_out, h_out, c_out, *offsets, batch, features, height, width, features,
            4 * features)  # fmt: skip
    _launch(args, directions, batch, features, height, width, False, ieee_float32(h), config)
    return h_out, c_out


def convlstm_layer_nhwc(
    gx_fwd: torch.Tensor, gx_bwd: torch.Tensor, w_packed: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence of one bidirectional layer over E frames: gx_fwd, gx_bwd (E, B, H, W, 4F) contiguous, the
    hoisted gates of each direction (each from its own input convolution); w_packed (2, 9, F, 4F). Returns h of each
    direction at every frame, two (E, B, H, W, F) (the backward direction runs from the last frame). One launch
    per step for both directions; c lives in two float32 buffers, read from one and written to the other (an
    autotuner's repeated launch then recomputes the same values)."""
    frames, batch, height, width, gates = gx_fwd.shape
    features = gates // 4
    for name, gx in (("gx_fwd", gx_fwd), ("gx_bwd", gx_bwd)):
        if gates != 4 * features or tuple(gx.shape) != tuple(gx_fwd.shape) or not gx.is_contiguous():
            raise ValueError(f"convlstm_layer_nhwc: {name} must be contiguous {tuple(gx_fwd.shape[:4])} × 4F, "
                             f"got {tuple(gx.shape)}")  # fmt: skip
    if tuple(w_packed.shape) != (2, 9, features, 4 * features) or not w_packed.is_contiguous():
        raise ValueError(f"convlstm_layer_nhwc: w_packed must be contiguous (2, 9, {features}, {4 * features}), "
                         f"got {tuple(w_packed.shape)}")  # fmt: skip
    out_fwd = torch.empty(frames, batch, height, width, features, dtype=gx_fwd.dtype, device=gx_fwd.device)
    out_bwd = torch.empty_like(out_fwd)
    cells = torch.zeros(2, 2, batch, height, width, features, dtype=torch.float32, device=gx_fwd.device)
    frame_h, frame_gx = batch * height * width * features, batch * height * width * gates
    ieee = ieee_float32(gx_fwd)
    for k in range(frames):
        j = frames - 1 - k  # the backward direction's frame
        h_offsets = (0, 0) if k == 0 else ((k - 1) * frame_h, (j + 1) * frame_h)
        offsets = (*h_offsets, k * frame_gx, j * frame_gx, k * frame_h, j * frame_h)
        args = (out_fwd, out_bwd, w_packed, gx_fwd, gx_bwd, cells[k % 2], out_fwd, out_bwd, cells[(k + 1) % 2],
                *offsets, batch, features, height, width, features, gates)  # fmt: skip
        _launch(args, 2, batch, features, height, width, k == 0, ieee)
    return out_fwd, out_bwd
