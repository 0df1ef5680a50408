"""Triton: the phase fusion as a window-decomposed 3×3 convolution in a channels-last layout (no autograd; the op
is cmrvsr_fast/ops/phase_fusion.py's window_conv3x3).

For every output position p and cine b,
    out[p, b] = bias + Σ_d [ conv3×3(x[frame[p, d], b], w[d]) + code[frame[p, d], b] · maps[d] ] (+ residual[p, b])
over the window offsets d whose frame index is ≥ 0 (−1: outside the sequence, zero padding in time), on tensors
whose frames are channels-last in memory, as the Engine's convolutions and the layer op leave them: no conversion
to NCHW before the fusion and back after it. With window 1, no codes and a residual it is the projection
convolution with the residual add in its epilogue. One program: BLOCK_P pixels × BLOCK_O output channels of one
(position, cine); implicit GEMM over K = window × 9 taps × C input channels into an fp32 accumulator. As for the
ConvLSTM step (kernels/convlstm_nhwc.py), a K step is one tap and a chunk of input channels, contiguous per pixel
under one mask per pixel (16-byte loads), and the weights, packed as (window, tap, input channel, output channel),
load contiguously along the output channels.

The channel counts are compile-time constants: the Engine's 136 (129 frame channels aligned to 8) is no multiple
of 16, the only divisibility Triton's JIT specialises run-time integers on, and without it the compiler could not
prove a pixel's channels 16-byte aligned and would load them element by element. (Two compilations per dtype: the
fusion, 128 → 136 channels, and the projection, 136 → 64.)

Layouts (contiguous): x (E, B, H, W, C); frame (P, window) int32; w (window, 9, C, O) from `pack_weights`; bias
(O,) fp32; codes (E, B) fp32; maps (window, H, W, O) fp32; residual and out (P, B, H, W, O).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .conv_tiles import accumulate, autotune, channels_last_tap, ieee_float32, output_tile

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _window_conv_nhwc_kernel(
    x_ptr, frame_ptr, w_ptr, bias_ptr, codes_ptr, maps_ptr, residual_ptr, out_ptr,
    B, C: tl.constexpr, OUT_CH: tl.constexpr, H, W, WINDOW,
    HAS_PHASE: tl.constexpr, HAS_RESIDUAL: tl.constexpr, FP32_IEEE: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    pid_nb = tl.program_id(2)  # position · B + cine
    position = pid_nb // B
    cine = pid_nb % B
    hw = H * W
    offs_p, offs_o, mask_p, mask_o, y, x = output_tile(H, W, OUT_CH, BLOCK_P, BLOCK_O)
    acc = tl.zeros((BLOCK_P, BLOCK_O), dtype=tl.float32)
    chunks = tl.cdiv(C, BLOCK_K)
    for d in range(0, WINDOW):
        frame = tl.load(frame_ptr + position * WINDOW + d)
        if frame >= 0:
            x_base = x_ptr + (frame.to(tl.int64) * B + cine) * hw * C
            w_base = w_ptr + d * 9 * C * OUT_CH  # the weights are small: int32 offsets suffice
            for step in range(0, 9 * chunks):  # one tap and one chunk of input channels per step
                a, tap, offs_c, mask_c = channels_last_tap(x_base, step, chunks, y, x, mask_p, H, W, C, C, BLOCK_K)
                b = tl.load(w_base + (tap * C + offs_c)[:, None] * OUT_CH + offs_o[None, :],
                            mask=mask_c[:, None] & mask_o[None, :], other=0.0)  # fmt: skip
                acc = accumulate(acc, a, b, FP32_IEEE)
            if HAS_PHASE:
                code = tl.load(codes_ptr + frame * B + cine)
                phase_map = tl.load(maps_ptr + d * hw * OUT_CH + (offs_p * OUT_CH)[:, None] + offs_o[None, :],
                                    mask=mask_p[:, None] & mask_o[None, :], other=0.0)  # fmt: skip
                acc += code * phase_map
    acc += tl.load(bias_ptr + offs_o, mask=mask_o, other=0.0)[None, :]
    tile = pid_nb.to(tl.int64) * hw * OUT_CH + (offs_p * OUT_CH)[:, None] + offs_o[None, :]
    tile_mask = mask_p[:, None] & mask_o[None, :]
    if HAS_RESIDUAL:
        acc += tl.load(residual_ptr + tile, mask=tile_mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + tile, acc.to(out_ptr.dtype.element_ty), mask=tile_mask)


def _config(p: int, o: int, k: int, warps: int, stages: int) -> triton.Config:
    return triton.Config({"BLOCK_P": p, "BLOCK_O": o, "BLOCK_K": k}, num_warps=warps, num_stages=stages)


# bf16/fp16 and TF32 tiles. The fusion has 129 outputs (136 with the Engine's aligned frame channels on a GPU) and
# the projection 64: a 128-wide output tile computes 256 columns for 136 (47 % padding), a 64-wide one 192 (29 %),
# a 32-wide one 160 (15 %) but reloads the activations five times — so the autotuner gets all three widths, with
# more pixels per program for the narrow ones. Compiled for sm_90 with no spills (tests/test_triton_compile.py).
_CONFIGS = [
    _config(*tile)
    for tile in [
        (128, 64, 64, 8, 3),
        (128, 128, 64, 8, 3),
        (256, 32, 64, 8, 3),
        (128, 32, 64, 4, 3),
        (64, 64, 64, 4, 3),
        (128, 64, 32, 8, 4),  # K steps of 32: the projection's 136 input channels fill 160 of K, not 192
    ]
]
_IEEE_CONFIGS = [_config(64, 32, 16, 4, 2), _config(64, 64, 16, 4, 2)]  # FMA-lowered dots: small tiles
INTERPRETER_CONFIG = {"BLOCK_P": 32, "BLOCK_O": 16, "BLOCK_K": 16}
_KEY = ["B", "C", "OUT_CH", "H", "W", "WINDOW"]
_tuned = autotune(_CONFIGS, _KEY)(_window_conv_nhwc_kernel)
_tuned_ieee = autotune(_IEEE_CONFIGS, _KEY)(_window_conv_nhwc_kernel)


def pack_weights(w: torch.Tensor) -> torch.Tensor:
    """(window, O, C, 3, 3) -> (window, 9, C, O): row tap · C + input channel, column the output channel."""
    window, outputs, channels = w.shape[:3]
    return w.permute(0, 3, 4, 2, 1).reshape(window, 9, channels, outputs).contiguous()


def window_conv3x3_nhwc(
    x: torch.Tensor,
    frame: torch.Tensor,
    w_packed: torch.Tensor,
    bias: torch.Tensor,
    codes: torch.Tensor | None = None,
    maps: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    config: triton.Config | None = None,
) -> torch.Tensor:
    """Launch; inputs contiguous in the layouts above (the op prepares them). Returns out (P, B, H, W, O) in x's
    dtype. `config`: one of the autotuning configurations instead of the autotuner's choice (tests, timing)."""
    _, batch, height, width, channels = x.shape
    positions, window = frame.shape
    outputs = w_packed.shape[-1]
    if tuple(w_packed.shape) != (window, 9, channels, outputs):
        raise ValueError(f"window_conv3x3_nhwc: w_packed {tuple(w_packed.shape)} does not fit window {window} "
                         f"and {channels} input channels")  # fmt: skip
    out = torch.empty(positions, batch, height, width, outputs, dtype=x.dtype, device=x.device)
    dummy = bias  # a valid pointer for the arguments a constexpr switch leaves unread
    optional = [t if t is not None else dummy for t in (codes, maps, residual)]
    args = (x, frame, w_packed, bias, *optional, out, batch, channels, outputs, height, width, window)
    flags = {"HAS_PHASE": codes is not None, "HAS_RESIDUAL": residual is not None, "FP32_IEEE": ieee_float32(x)}

    def grid(meta):
        return (triton.cdiv(height * width, meta["BLOCK_P"]), triton.cdiv(outputs, meta["BLOCK_O"]),
                positions * batch)  # fmt: skip

    if config is None and INTERPRET:  # autotuning is meaningless (and slow) under the CPU interpreter
        config = triton.Config(dict(INTERPRETER_CONFIG))
    if config is not None:
        _window_conv_nhwc_kernel[grid(config.kwargs)](*args, **flags, **config.kwargs, num_warps=config.num_warps,
                                                      num_stages=config.num_stages)  # fmt: skip
    else:
        (_tuned_ieee if flags["FP32_IEEE"] else _tuned)[grid](*args, **flags)
    return out
