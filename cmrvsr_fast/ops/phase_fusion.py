"""The phase fusion as a window-decomposed 3×3 convolution, one op with its reference beside it.

window_conv3x3(x, frame, w, bias, codes=None, maps=None, residual=None, backend="auto") -> (P, B, O, H, W):
    out[p] = bias + Σ_d [conv3×3(x[frame[p, d]], w[d]) + codes[frame[p, d]] · maps[d]] (+ residual[p]),
    skipping offsets whose frame index is −1 (outside the sequence: zero padding in time). With x = [h_fwd, h_bwd]
    per frame this is the reference model's fusion convolution without the window·(2F+1)-channel concatenation
    (docs/model.md): the phase channel, constant in space, enters as its code times its kernels' response to a
    ones map. The Engine calls it twice per stage: the fusion over the window with the phase term, then the
    projection (window 1, each position its own frame).
    x (E, B, C, H, W); frame (P, window) integer; w (window, O, C, 3, 3); bias (O,); codes (E, B); maps
    (window, O, H, W); residual (P, B, O, H, W). The output's frames are channels-last in memory (NCHW from
    the CUDA C++ twin).
Backends (cmrvsr_fast/ops/backends.py decides): "torch" runs `window_conv3x3_ref`; "triton" the channels-last
kernel (kernels/phase_fusion_nhwc.py; x's frames converted to channels-last unless they are, as the Engine's
are); "cuda" the CUDA C++ twin (csrc/phase_fusion.cu through cmrvsr_fast._C).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from cmrvsr_fast.ops.backends import resolve_backend

Table = Sequence[Sequence[int]]


def window_conv3x3_ref(
    x: Tensor, frame: Tensor | Table, w: Tensor, bias: Tensor, codes: Tensor | None = None,
    maps: Tensor | None = None, residual: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """The op as PyTorch ops. One convolution of every frame by every offset's weights (window·O output
    channels); per offset, its contributions are added in place to a float32 accumulator that starts as the phase
    terms of every position (one matmul): half the memory traffic of summing fresh temporaries. `frame` may be
    given as nested lists: their values are then static, as torch.compile, CUDA graphs and exporters need (the
    Engine passes lists)."""
    table = frame.tolist() if isinstance(frame, Tensor) else [list(row) for row in frame]
    frames, batch, channels, height, width = x.shape
    window, outputs = w.shape[:2]
    flat = _channels_last_frames(x).reshape(frames * batch, channels, height, width)
    if codes is None and table == [[j] for j in range(frames)]:
        # Each position its own frame and no phase term (the projection): one convolution, its bias inside it.
        out = F.conv2d(flat, w[0], bias.to(x.dtype), padding=1).reshape(frames, batch, outputs, height, width)
        return out if residual is None else out + residual
    contributions = F.conv2d(flat, w.reshape(window * outputs, channels, 3, 3), padding=1)
    contributions = contributions.reshape(frames, batch, window, outputs, height, width)
    acc = _accumulator(table, batch, outputs, height, width, codes, maps, x.device)
    for d in range(window):
        for position, first, length in frame_runs([row[d] for row in table]):
            acc[position : position + length].add_(contributions[first : first + length, :, d])
    acc.add_(bias.float().view(1, 1, -1, 1, 1))
    if residual is not None:
        acc.add_(residual)
    return acc.to(x.dtype)


def frame_runs(frames: list[int]) -> list[tuple[int, int, int]]:
    """(first position, its frame, length) of each run of positions whose frames follow one another, frames −1
    (outside the sequence) left out: each run's contributions are one slice of the per-frame convolution."""
    runs: list[tuple[int, int, int]] = []
    for position, frame in enumerate(frames):
        if frame < 0:
            continue
        if runs and runs[-1][0] + runs[-1][2] == position and runs[-1][1] + runs[-1][2] == frame:
            runs[-1] = (runs[-1][0], runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((position, frame, 1))
    return runs


def _accumulator(
    table: list[list[int]], batch: int, outputs: int, height: int, width: int, codes: Tensor | None,
    maps: Tensor | None, device: torch.device,
) -> Tensor:  # fmt: skip
    """(P, B, O, H, W) float32 with channels-last frames: the phase terms Σ_d codes[frame[p, d]] · maps[d] of every
    position (zero without codes)."""
    positions, window = len(table), len(table[0])
    if codes is None:
        acc = torch.zeros(positions * batch, height, width, outputs, dtype=torch.float32, device=device)
        return acc.reshape(positions, batch, height, width, outputs).permute(0, 1, 4, 2, 3)
    code_windows = codes.new_zeros(positions, batch, window, dtype=torch.float32)  # codes[frame[p, d]] or 0
    for d in range(window):
        for position, first, length in frame_runs([row[d] for row in table]):
            code_windows[position : position + length, :, d] = codes[first : first + length]
    maps_last = maps.float().permute(0, 2, 3, 1).reshape(window, -1)  # (window, H·W·O): a view if channels-last
    acc = (code_windows @ maps_last).reshape(positions, batch, height, width, outputs)
    return acc.permute(0, 1, 4, 2, 3)


def _channels_last_frames(x: Tensor) -> Tensor:
    """(E, B, C, H, W) with each frame channels-last in memory (a copy unless it is already): converted before the
    kernel's op, so that compilers see the op take and give the one layout it works in."""
    flat = x.reshape(-1, *x.shape[2:])
    return flat.contiguous(memory_format=torch.channels_last).reshape(x.shape)


def _frames_last(t: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    return t.permute(0, 1, 3, 4, 2).to(dtype or t.dtype).contiguous()  # no copy if channels-last already


@torch.library.custom_op("cmrvsr::window_conv3x3", mutates_args=())
def _window_conv3x3_op(
    x: Tensor, frame: Tensor, w: Tensor, bias: Tensor, codes: Tensor | None, maps: Tensor | None,
    residual: Tensor | None,
) -> Tensor:  # fmt: skip
    """The channels-last Triton kernel on the op's own arguments (weights and maps repacked: small copies)."""
    from cmrvsr_fast.kernels.phase_fusion_nhwc import pack_weights, window_conv3x3_nhwc

    out = window_conv3x3_nhwc(
        _frames_last(x), frame.to(torch.int32).contiguous(), pack_weights(w.to(x.dtype)), bias.float().contiguous(),
        None if codes is None else codes.float().contiguous(),
        None if maps is None else maps.float().permute(0, 2, 3, 1).contiguous(),
        None if residual is None else _frames_last(residual, x.dtype),
    )  # fmt: skip
    return out.permute(0, 1, 4, 2, 3)


@_window_conv3x3_op.register_fake
def _(x, frame, w, bias, codes, maps, residual):
    return x.new_empty(frame.shape[0], x.shape[1], x.shape[3], x.shape[4], w.shape[1]).permute(0, 1, 4, 2, 3)


def window_conv3x3(
    x: Tensor, frame: Tensor, w: Tensor, bias: Tensor, codes: Tensor | None = None, maps: Tensor | None = None,
    residual: Tensor | None = None, backend: str = "auto",
) -> Tensor:  # fmt: skip
    _check(x, frame, w, bias, codes, maps, residual)
    chosen = resolve_backend("window_conv3x3", backend, x.device)
    if chosen == "triton":
        return _window_conv3x3_op(_channels_last_frames(x), frame, w, bias, codes, maps, residual)
    if chosen == "cuda":
        return _window_conv3x3_cuda(x, frame, w, bias, codes, maps, residual)
    return window_conv3x3_ref(x, frame, w, bias, codes, maps, residual)


def _check(
    x: Tensor, frame: Tensor, w: Tensor, bias: Tensor, codes: Tensor | None, maps: Tensor | None,
    residual: Tensor | None,
) -> None:  # fmt: skip
    if (codes is None) != (maps is None):
        raise ValueError("window_conv3x3: codes and maps come together")
    if w.shape[0] != frame.shape[1] or w.shape[2] != x.shape[2]:
        raise ValueError(f"window_conv3x3: w {tuple(w.shape)} does not fit window {frame.shape[1]} and "
                         f"{x.shape[2]} input channels")  # fmt: skip
    # The kernels index these by the shapes above: a mismatch (weights padded, maps not) would read past them.
    frames, batch, _, height, width = x.shape
    window, outputs = w.shape[:2]
    expected = {"bias": (bias, (outputs,)), "codes": (codes, (frames, batch)),
                "maps": (maps, (window, outputs, height, width)),
                "residual": (residual, (frame.shape[0], batch, outputs, height, width))}  # fmt: skip
    for name, (tensor, shape) in expected.items():
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ValueError(f"window_conv3x3: {name} has shape {tuple(tensor.shape)}, expected {shape}")


def _window_conv3x3_cuda(
    x: Tensor, frame: Tensor, w: Tensor, bias: Tensor, codes: Tensor | None, maps: Tensor | None,
    residual: Tensor | None,
) -> Tensor:  # fmt: skip
    """The CUDA C++ twin (csrc/phase_fusion.cu) through the extension's pointer-and-stream launcher."""
    from cmrvsr_fast.ops import extension as _ext

    x, w = x.contiguous(), w.to(x.dtype).contiguous()
    frame = frame.to(torch.int32).contiguous()
    bias = bias.float().contiguous()
    codes = None if codes is None else codes.float().contiguous()
    maps = None if maps is None else maps.float().contiguous()
    residual = None if residual is None else residual.to(x.dtype).contiguous()
    positions, window = frame.shape
    _, batch, in_channels, height, width = x.shape
    out = x.new_empty(positions, batch, w.shape[1], height, width)

    def pointer(t: Tensor | None) -> int:
        return 0 if t is None else t.data_ptr()

    error = _ext.extension().window_conv3x3(
        _ext.DTYPE_CODES[x.dtype], x.data_ptr(), frame.data_ptr(), w.data_ptr(), bias.data_ptr(), pointer(codes),
        pointer(maps), pointer(residual), out.data_ptr(), positions, window, batch, in_channels, w.shape[1], height,
        width, torch.cuda.current_stream(x.device).cuda_stream,
    )  # fmt: skip
    if error:
        raise RuntimeError(f"window_conv3x3 (CUDA): {error}")
    return out
