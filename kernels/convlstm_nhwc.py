"""Triton: the fused ConvLSTM step of both directions in a channels-last layout (no autograd; the op is
cmrvsr_fast/ops/convlstm.py's convlstm_layer), and a whole layer's recurrence through it without a copy per step.

gates = conv3×3(h, W_h) + gx (gx: the hoisted input-to-gates convolution plus bias, computed for all frames at
once by the Engine); c' = σ(f)·c + σ(i)·tanh(g); h' = σ(o)·tanh(c'). One program computes a tile of BLOCK_P
pixels × BLOCK_F hidden channels of one (direction, cine): the 3×3 convolution as an implicit GEMM over K = 9 taps
× F input channels into four fp32 accumulators (i, f, o, g) held in registers, then the cell update in the
epilogue. Gates never reach memory; the cell state is read and written in fp32.

Why channels-last: a K step is one tap and a chunk of channels, contiguous per pixel, under one mask per pixel —
16-byte loads — where an NCHW im2col tile is a gather, one shifted pixel run per (channel, tap) with a mask per
element; and the weights, packed as (tap, input channel, gate · F + hidden channel) (a small permutation per layer
call), load contiguously along the output channels.

Why a layer launcher: the Engine's hoisted gates come from a channels-last convolution over every frame (one per
direction), and a step reads its frame's gates and the previous hidden state and writes the new one at offsets
into those sequence buffers: no stack of the two directions' gates, no contiguous copy, no scatter of h into the
outputs (copies that would cost about as much as the step kernel itself).

Addressing (elements): a tensor with pixels `row` elements apart, (cine, y, x, channel) at
base + cine · H·W·row + (y·W + x) · row + channel; direction d reads h(t−1) at h{d}_ptr + h_off_d, its gates at
gx{d}_ptr + gx_off_d (gate blocks i, f, o, g, F channels each) and writes h(t) at out{d}_ptr + out_off_d (the
step passes one tensor twice, with direction 1's offsets past direction 0's block; the layer each direction's
own buffers). The cell state c (D, B, H, W, F) float32 is read from c_ptr and written to c_out_ptr.
"""

from __future__ import annotations

import contextlib
import os

import torch
import triton
import triton.language as tl

from .conv_tiles import accumulate, autotune, channels_last_tap, ieee_float32, output_tile, patch_tile

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _tanh(x):
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


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
    """c' = σ(f)·c + σ(i)·tanh(g), h' = σ(o)·tanh(c') from the complete gates (ops/convlstm.py's lstm_cell); c in
    float32, h' in the output's dtype."""
    c = tl.load(c_tile, mask=tile_mask, other=0.0)
    c_next = tl.sigmoid(gate_f) * c + tl.sigmoid(gate_i) * _tanh(gate_g)
    h_next = tl.sigmoid(gate_o) * _tanh(c_next)
    tl.store(c_out_tile, c_next, mask=tile_mask)
    tl.store(h_out_tile, h_next.to(h_out_tile.dtype.element_ty), mask=tile_mask)


def _config(
    p: int, f: int, k: int, warps: int, stages: int, gates_first: bool, tma: bool = False, width: int = 16
) -> triton.Config:
    """A tile of p pixels (for TMA a p/width × width patch of them) × f hidden channels (× 4 gates), K steps of k."""
    blocks = {"BLOCK_P": p, "BLOCK_F": f, "BLOCK_K": k, "GATES_FIRST": gates_first, "TMA": tma, "BLOCK_W": width}
    return triton.Config(blocks, num_warps=warps, num_stages=stages)


# bf16/fp16 and TF32 tiles: the large ones for a big GPU at paper-x4's F = 64, the smaller tiles for GPUs with
# fewer SMs and for small images. GATES_FIRST: whether the accumulators start as the hoisted gates (loaded before
# the K loop, beside its first copies) or get them added after it (loads the epilogue waits for); offered for the
# tiles ptxas favours, so that the autotuner measures both on the GPU.
_CONFIGS = [
    _config(*tile)
    for tile in [
        (64, 32, 32, 4, 3, False),
        (128, 32, 32, 4, 3, False),
        (128, 64, 64, 8, 3, False),  # 255 registers, 147 KB of shared memory: one CTA per SM
        (64, 32, 64, 4, 3, False),  # ~157 registers, 72 KB: up to three CTAs per SM (ptxas, test_triton_compile.py)
        (128, 32, 64, 8, 3, False),  # ~165 registers, 96 KB: one CTA per SM, with half the accumulators of the above
        (128, 64, 64, 8, 3, True),
        (64, 32, 64, 4, 3, True),
        # 16 warps: twice the threads to hide load latency and share the epilogue, 128 registers each, no spills
        # under Triton 3.6 and 3.9. The second reads a weight tile once per 256 pixels (per pixel ~16 % less L2
        # traffic than 128 × 64).
        (128, 64, 64, 16, 3, True),
        (256, 32, 64, 16, 3, True),
    ]
]


def _tf32_fits(config: triton.Config, limit: int = 232448) -> bool:
    """Whether the tile's pipelined 4-byte copies (pixels × K of h, K × 4F of weights per stage) fit sm_90's
    shared memory (tests/test_triton_compile.py): the largest 16-bit tiles do not."""
    blocks = config.kwargs
    per_stage = blocks["BLOCK_P"] * blocks["BLOCK_K"] + blocks["BLOCK_K"] * 4 * blocks["BLOCK_F"]
    return config.num_stages * per_stage * 4 <= limit


# TF32: 4-byte tiles, so not the largest 16-bit ones.
_TF32_CONFIGS = [c for c in _CONFIGS if _tf32_fits(c)]
# IEEE float32: Triton lowers these dots to FMAs unrolled over the tile; small tiles keep the code (and its
# compile time) small, and no tensor core would help them anyway.
_IEEE_CONFIGS = [_config(64, 32, 16, 4, 2, False), _config(32, 32, 16, 4, 2, False)]
# Under the interpreter (CPU tests): one small tile, no autotuning; the tests set GATES_FIRST and TMA both ways.
INTERPRETER_CONFIG = {"BLOCK_P": 32, "BLOCK_F": 16, "BLOCK_K": 16, "GATES_FIRST": False, "TMA": False, "BLOCK_W": 8}
_KEY = ["B", "F", "H", "W", "H_ROW", "GX_ROW", "FIRST"]  # B: the grid scales with the cines
# Hopper's tensor-memory accelerator (TMA): the program's pixels are a BLOCK_P // BLOCK_W × BLOCK_W patch, so a
# K step's activations are one box of h — the patch shifted by the tap, one chunk of channels — that TMA copies
# into shared memory, filling the pixels outside the image (the convolution's zero padding) with zeros: no
# per-pixel addresses or masks in registers; the weights load as boxes too. Two shapes of patch, compiled for
# sm_90 here (tests/test_triton_compile.py) with Triton 3.6 (the device image's) and 3.9:
# - rows (BLOCK_W = BLOCK_P: one image row of 64 or 128 pixels, paper-x4's LR widths): the box is (1, 1, P, K),
#   which Triton keeps in shared memory and feeds to wgmma as it is, as for the pointer tiles; 100-160 registers,
#   no spills, no serialised wgmma in either version (a 64-pixel row with all 64 hidden channels needs 8 warps:
#   on 4 it spills under both);
# - 8 × 16 or 4 × 16 patches (any width): Triton takes the (1, rows, 16, K) box through registers for the
#   (pixels, K) dot; ptxas serialises those wgmma instructions under Triton 3.9 (its C7513 warning), not under
#   3.6. (A full-width (128, 64) patch tile spills under 3.6 and is not offered.)
# Until a GPU has timed them, the autotuner offers them only when CMRVSR_TRITON_TMA=1 (or inside
# `tma_tiles_in_autotuning()`); the device check times and tests each one explicitly, and times the Engine with
# them in the autotuning beside the Engine without.
_TMA_CONFIGS = [
    _config(*tile, tma=True, width=width)
    for *tile, width in [
        (64, 64, 64, 8, 2, True, 64),  # a 64-pixel row, every hidden channel: 110-128 registers (2 CTAs/SM), 82 KB
        (64, 64, 32, 8, 3, True, 64),  # the same in K steps of 32 (18 K steps for 3 stages): 62 KB
        (64, 32, 64, 4, 3, True, 64),  # half the hidden channels: 100-128 registers, 74 KB
        (64, 32, 64, 4, 3, False, 64),
        (128, 32, 64, 8, 3, True, 128),  # a row of a 128-wide image; 128-129 registers, 98 KB
        (128, 32, 64, 8, 3, False, 128),
        (128, 32, 64, 8, 3, True, 16),  # 8 × 16 patches
        (64, 32, 64, 4, 3, True, 16),  # 4 × 16 patches
    ]
]


def _tma_tiles_that_fit(configs: list, named_args: dict, **_) -> list:
    """Autotuning prune: a TMA row wider than the image (rounded up to 16 pixels) would compute mostly padding."""
    width = triton.cdiv(named_args["W"], 16) * 16
    return [c for c in configs if not c.kwargs["TMA"] or c.kwargs["BLOCK_W"] <= max(16, width)]


TMA_IN_AUTOTUNING = os.environ.get("CMRVSR_TRITON_TMA") == "1"


@contextlib.contextmanager
def tma_tiles_in_autotuning(enabled: bool = True):
    """Offer the TMA tiles to the autotuner (on Hopper and later) inside the block, as CMRVSR_TRITON_TMA=1 does for
    a whole process; restored after it (the benchmarks time the Engine with and without them in one process)."""
    global TMA_IN_AUTOTUNING
    saved, TMA_IN_AUTOTUNING = TMA_IN_AUTOTUNING, enabled
    try:
        yield
    finally:
        TMA_IN_AUTOTUNING = saved


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
    TMA: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    pid_db = tl.program_id(2)  # direction · B + cine
    direction = pid_db // B
    cine = (pid_db % B).to(tl.int64)
    hw = H * W
    if TMA:  # a patch of BLOCK_P // BLOCK_W rows × BLOCK_W columns
        offs_p, offs_f, mask_p, mask_f, y, x = patch_tile(H, W, F, BLOCK_P, BLOCK_F, BLOCK_W)
    else:  # BLOCK_P consecutive pixels
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
    if not FIRST and TMA:  # h(t−1) = 0 at the first step: the gates are the hoisted ones alone
        # h(t−1) of this direction as (cine, y, x, channel) boxes of the patch; the weights as (row, column) boxes,
        # row (direction · 9 + tap) · F + input channel. Boxes reaching past the image or past F come back zero
        # (the convolution's padding); past F the weight rows belong to the next tap, but meet zero activations.
        h_desc = tl.make_tensor_descriptor(h_ptr, shape=[B, H, W, F], strides=[hw * H_ROW, W * H_ROW, H_ROW, 1],
                                           block_shape=[1, BLOCK_P // BLOCK_W, BLOCK_W, BLOCK_K])  # fmt: skip
        w_desc = tl.make_tensor_descriptor(w_ptr, shape=[tl.num_programs(2) // B * 9 * F, 4 * F], strides=[4 * F, 1],
                                           block_shape=[BLOCK_K, BLOCK_F])  # fmt: skip
        patches_x = tl.cdiv(W, BLOCK_W)
        y0 = (tl.program_id(0) // patches_x) * (BLOCK_P // BLOCK_W)
        x0 = (tl.program_id(0) % patches_x) * BLOCK_W
        f0 = tl.program_id(1) * BLOCK_F
        image = pid_db % B
        chunks = tl.cdiv(F, BLOCK_K)
        for step in range(0, 9 * chunks):  # one tap and one chunk of input channels per step
            tap = step // chunks
            c0 = (step % chunks) * BLOCK_K
            a = h_desc.load([image, y0 + tap // 3 - 1, x0 + tap % 3 - 1, c0]).reshape(BLOCK_P, BLOCK_K)
            row = (direction * 9 + tap) * F + c0
            acc_i = accumulate(acc_i, a, w_desc.load([row, f0]), FP32_IEEE)
            acc_f = accumulate(acc_f, a, w_desc.load([row, F + f0]), FP32_IEEE)
            acc_o = accumulate(acc_o, a, w_desc.load([row, 2 * F + f0]), FP32_IEEE)
            acc_g = accumulate(acc_g, a, w_desc.load([row, 3 * F + f0]), FP32_IEEE)
    elif not FIRST:
        h_base = h_ptr + cine * hw * H_ROW
        w_base = w_ptr + direction.to(tl.int64) * 9 * F * 4 * F
        chunks = tl.cdiv(F, BLOCK_K)
        for step in range(0, 9 * chunks):  # one tap and one chunk of input channels per step
            a, tap, offs_c, mask_c = channels_last_tap(h_base, step, chunks, y, x, mask_p, H, W, H_ROW, F, BLOCK_K)
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
_tuned_with_tma = autotune(_CONFIGS + _TMA_CONFIGS, _KEY, prune=_tma_tiles_that_fit)(_step_kernel)
_tuned_tf32 = autotune(_TF32_CONFIGS, _KEY)(_step_kernel)
_tuned_ieee = autotune(_IEEE_CONFIGS, _KEY)(_step_kernel)


def tma_applies(h: torch.Tensor, w_packed: torch.Tensor, row: int, frame_offsets: list[int]) -> bool:
    """Whether the TMA tiles can read these tensors: every h base (tensor + element offset) and the weights
    16-byte aligned, rows of h and of the weights a multiple of 16 bytes (16-bit elements: F a multiple of 8).
    (The autotuner offers the TMA tiles for 16-bit dtypes only; a given configuration runs in any dtype.)"""
    size = h.element_size()
    bases = [h.data_ptr() + offset * size for offset in frame_offsets] + [w_packed.data_ptr()]
    rows = (row * size, w_packed.shape[-1] * w_packed.element_size())
    return all(base % 16 == 0 for base in bases) and all(length % 16 == 0 for length in rows)


def _tma_scratch(size: int, alignment: int, stream: int | None) -> torch.Tensor:
    """Global memory for the descriptors the TMA tiles build on the device (Triton asks at each launch, on the
    launch's current device; PyTorch's allocations are 512-byte aligned, past the 128 bytes asked for)."""
    return torch.empty(size, dtype=torch.int8, device="cuda")


def _ensure_tma_allocator() -> None:
    """Give Triton an allocator for the TMA descriptors unless the process already set one (Triton's default
    raises at launch)."""
    try:  # Triton's private record of the allocator: a ContextVar from 3.5, a plain global before
        from triton.runtime import _allocation

        current = _allocation._allocator
        current = current.get() if hasattr(current, "get") else current
        unset = isinstance(current, _allocation.NullAllocator)
    except (ImportError, AttributeError):  # another layout: set ours (it serves any Triton kernel equally)
        unset = True
    if unset:
        triton.set_allocator(_tma_scratch)


def _launch(args: tuple, directions: int, batch: int, features: int, height: int, width: int, first: bool,
            ieee: bool, tma: bool, config: triton.Config | None = None) -> None:  # fmt: skip
    """Autotuned on a GPU; one given configuration (tests, per-tile timing) or the interpreter's small tile. `tma`:
    whether the TMA tiles may run (tma_applies; a TMA configuration where it is false runs with pointer loads)."""

    def grid(meta):
        pixels = (triton.cdiv(height, meta["BLOCK_P"] // meta["BLOCK_W"]) * triton.cdiv(width, meta["BLOCK_W"])
                  if meta["TMA"] else triton.cdiv(height * width, meta["BLOCK_P"]))  # fmt: skip
        return pixels, triton.cdiv(features, meta["BLOCK_F"]), directions * batch

    if config is None and INTERPRET:  # autotuning is meaningless (and slow) under the CPU interpreter
        config = triton.Config(dict(INTERPRETER_CONFIG))
    if config is not None:
        blocks = {**config.kwargs, "TMA": config.kwargs["TMA"] and tma}
        if blocks["TMA"] and not INTERPRET:
            _ensure_tma_allocator()
        _step_kernel[grid(blocks)](*args, FIRST=first, FP32_IEEE=ieee, **blocks, num_warps=config.num_warps,
                                   num_stages=config.num_stages)  # fmt: skip
        return
    if ieee:
        tuned = _tuned_ieee
    elif args[0].dtype == torch.float32:
        tuned = _tuned_tf32
    elif tma and TMA_IN_AUTOTUNING and torch.cuda.get_device_capability(args[0].device)[0] >= 9:  # Hopper on
        _ensure_tma_allocator()
        tuned = _tuned_with_tma
    else:
        tuned = _tuned
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
    tma = tma_applies(h, w_packed, features, [0, block])
    _launch(args, directions, batch, features, height, width, False, ieee_float32(h), tma, config)
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
    # Every step's h(t−1) sits at a whole number of frames into the sequence buffers.
    tma = all(tma_applies(out, w_packed, features, [0, frame_h]) for out in (out_fwd, out_bwd))
    for k in range(frames):
        j = frames - 1 - k  # the backward direction's frame
        h_offsets = (0, 0) if k == 0 else ((k - 1) * frame_h, (j + 1) * frame_h)
        offsets = (*h_offsets, k * frame_gx, j * frame_gx, k * frame_h, j * frame_h)
        args = (out_fwd, out_bwd, w_packed, gx_fwd, gx_bwd, cells[k % 2], out_fwd, out_bwd, cells[(k + 1) % 2],
                *offsets, batch, features, height, width, features, gates)  # fmt: skip
        _launch(args, 2, batch, features, height, width, k == 0, ieee, tma)
    return out_fwd, out_bwd
