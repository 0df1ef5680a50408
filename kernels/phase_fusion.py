"""Triton: the phase fusion as a window-decomposed 3×3 convolution (no autograd; see cmrvsr_fast/ops/phase_fusion.py).

For every output position p and cine b:
    out[p, b] = bias + Σ_d [ conv3×3(x[frame[p, d], b], w[d]) + code[frame[p, d], b] · maps[d] ] (+ residual[p, b])
over the window offsets d whose frame index is ≥ 0 (−1: outside the sequence, zero padding in time). With
x = [h_fwd, h_bwd] per frame this is the fusion convolution of SPEC §1 without the window·(2F+1)-channel
concatenation: the phase channel, constant in space, enters as code · (its kernels' response to a ones map).
With window 1, no codes and a residual it is the projection convolution with the residual add in its epilogue.
One program: BLOCK_P pixels × BLOCK_O output channels of one (position, cine); implicit GEMM over
K = window × C input channels × 9 taps (conv_tiles.py) into an fp32 accumulator.

Layouts (contiguous): x (E, B, C, H, W); frame (P, window) int32; w (window, O, C, 3, 3); bias (O,) fp32;
codes (E, B) fp32; maps (window, O, H, W) fp32; residual and out (P, B, O, H, W).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .conv_tiles import accumulate, autotune, ieee_float32, im2col_tile, output_tile, weight_rows

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _window_conv_kernel(
    x_ptr, frame_ptr, w_ptr, bias_ptr, codes_ptr, maps_ptr, residual_ptr, out_ptr,
    B, C, OUT_CH, H, W, WINDOW, K9,
    HAS_PHASE: tl.constexpr, HAS_RESIDUAL: tl.constexpr, FP32_IEEE: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    pid_nb = tl.program_id(2)  # position · B + cine
    position = pid_nb // B
    cine = pid_nb % B
    hw = H * W
    offs_p, offs_o, mask_p, mask_o, y, x = output_tile(H, W, OUT_CH, BLOCK_P, BLOCK_O)
    acc = tl.zeros((BLOCK_P, BLOCK_O), dtype=tl.float32)
    for d in range(0, WINDOW):
        frame = tl.load(frame_ptr + position * WINDOW + d)
        if frame >= 0:
            x_base = x_ptr + (frame.to(tl.int64) * B + cine) * C * hw
            w_base = w_ptr + d * OUT_CH * K9  # the weights are small: int32 offsets suffice
            for k0 in range(0, K9, BLOCK_K):  # K = C input channels × 9 taps, flat
                offs_k = k0 + tl.arange(0, BLOCK_K)
                mask_k = offs_k < K9
                a = im2col_tile(x_base, offs_k, mask_k, y, x, mask_p, H, W)
                b = weight_rows(w_base, offs_o, mask_o, offs_k, mask_k, K9)
                acc = accumulate(acc, a, b, FP32_IEEE)
            if HAS_PHASE:
                code = tl.load(codes_ptr + frame * B + cine)
                phase_map = tl.load(maps_ptr + (d * OUT_CH + offs_o[None, :]) * hw + offs_p[:, None],
                                    mask=mask_p[:, None] & mask_o[None, :], other=0.0)  # fmt: skip
                acc += code * phase_map
    acc += tl.load(bias_ptr + offs_o, mask=mask_o, other=0.0)[None, :]
    tile = pid_nb.to(tl.int64) * OUT_CH * hw + offs_o[None, :] * hw + offs_p[:, None]
    tile_mask = mask_p[:, None] & mask_o[None, :]
    if HAS_RESIDUAL:
        acc += tl.load(residual_ptr + tile, mask=tile_mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + tile, acc.to(out_ptr.dtype.element_ty), mask=tile_mask)


_CONFIGS = [  # bf16/fp16 and TF32: tensor-core tiles
    triton.Config({"BLOCK_P": p, "BLOCK_O": o, "BLOCK_K": k}, num_warps=nw, num_stages=ns)
    for p, o, k, nw, ns in [
        (64, 64, 32, 4, 3),
        (128, 64, 32, 4, 3),
        (64, 128, 32, 8, 3),  # run 3's choice for TF32 at 129 → 64 channels, 64² (H200)
        (128, 128, 64, 8, 3),
    ]
]
_IEEE_CONFIGS = [  # float32 without TF32: FMA-lowered dots, small tiles (see convlstm.py)
    triton.Config({"BLOCK_P": p, "BLOCK_O": o, "BLOCK_K": k}, num_warps=nw, num_stages=ns)
    for p, o, k, nw, ns in [(64, 32, 16, 4, 2), (64, 64, 16, 4, 2)]
]
_KEY = ["B", "C", "OUT_CH", "H", "W", "WINDOW"]  # B: the grid scales with the cines
_tuned = autotune(_CONFIGS, _KEY)(_window_conv_kernel)
_tuned_ieee = autotune(_IEEE_CONFIGS, _KEY)(_window_conv_kernel)


def window_conv3x3(
    x: torch.Tensor,
    frame: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor,
    codes: torch.Tensor | None = None,
    maps: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """Launch; inputs contiguous (the op checks). Returns out (P, B, O, H, W) in x's dtype."""
    _, batch, channels, height, width = x.shape
    positions, window = frame.shape
    outputs = w.shape[1]
    out = torch.empty(positions, batch, outputs, height, width, dtype=x.dtype, device=x.device)
    dummy = bias  # a valid pointer for the arguments a constexpr switch leaves unread
    optional = [t if t is not None else dummy for t in (codes, maps, residual)]
    args = (x, frame, w, bias, *optional, out, batch, channels, outputs, height, width, window, 9 * channels)
    flags = {"HAS_PHASE": codes is not None, "HAS_RESIDUAL": residual is not None}
    flags["FP32_IEEE"] = ieee_float32(x)
    if INTERPRET:
        grid = (triton.cdiv(height * width, 32), triton.cdiv(outputs, 16), positions * batch)
        _window_conv_kernel[grid](*args, **flags, BLOCK_P=32, BLOCK_O=16, BLOCK_K=16)
    else:

        def grid(meta):
            return (triton.cdiv(height * width, meta["BLOCK_P"]), triton.cdiv(outputs, meta["BLOCK_O"]),
                    positions * batch)  # fmt: skip

        (_tuned_ieee if flags["FP32_IEEE"] else _tuned)[grid](*args, **flags)
    return out
