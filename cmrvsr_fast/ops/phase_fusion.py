"""The phase fusion as a window-decomposed 3×3 convolution: public function, reference twin, torch.library op
and dispatch (kernels/phase_fusion.py has the Triton kernel and the layouts).

window_conv3x3(x, frame, w, bias, codes=None, maps=None, residual=None, backend="auto") -> (P, B, O, H, W):
    out[p] = bias + Σ_d [conv3×3(x[frame[p, d]], w[d]) + codes[frame[p, d]] · maps[d]] (+ residual[p]),
    skipping offsets whose frame index is −1. The Engine calls it twice per stage: the fusion over the window
    of [h_fwd, h_bwd] with the phase term, then the projection (window 1).
Backends: "reference", "triton" (kernels/phase_fusion.py; kernels/phase_fusion_nhwc.py when x's frames are
channels-last in memory, as the Engine's are: the output's frames are then channels-last too, and no frame is
converted), "cuda" (csrc/phase_fusion.cu through cmrvsr_fast._C).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cmrvsr_fast.ops.backends import resolve_backend


def window_conv3x3_ref(
    x: Tensor, frame: Tensor, w: Tensor, bias: Tensor, codes: Tensor | None = None, maps: Tensor | None = None,
    residual: Tensor | None = None,
) -> Tensor:  # fmt: skip
    positions, window = frame.shape
    _, batch, _, height, width = x.shape
    out = []
    for p in range(positions):
        acc = bias.float().view(1, -1, 1, 1).expand(batch, -1, height, width)
        for d in range(window):
            j = int(frame[p, d])
            if j < 0:
                continue
            acc = acc + F.conv2d(x[j], w[d], padding=1).float()
            if codes is not None:
                acc = acc + codes[j].float().view(batch, 1, 1, 1) * maps[d].float()
        if residual is not None:
            acc = acc + residual[p].float()
        out.append(acc.to(x.dtype))
    return torch.stack(out)


@torch.library.custom_op("cmrvsr::window_conv3x3", mutates_args=())
def _window_conv3x3_op(
    x: Tensor, frame: Tensor, w: Tensor, bias: Tensor, codes: Tensor | None, maps: Tensor | None,
    residual: Tensor | None,
) -> Tensor:  # fmt: skip
    from cmrvsr_fast.kernels.phase_fusion import window_conv3x3 as launch

    def ready(t: Tensor | None, dtype: torch.dtype | None = None) -> Tensor | None:
        return None if t is None else t.to(dtype or t.dtype).contiguous()

    return launch(ready(x), ready(frame, torch.int32), ready(w), ready(bias, torch.float32),
                  ready(codes, torch.float32), ready(maps, torch.float32), ready(residual))  # fmt: skip


@_window_conv3x3_op.register_fake
def _(x, frame, w, bias, codes, maps, residual):
    return x.new_empty(frame.shape[0], x.shape[1], w.shape[1], x.shape[3], x.shape[4])


def frames_channels_last(x: Tensor) -> bool:
    """Whether (E, B, C, H, W) x has each frame channels-last in memory (and is not also plainly contiguous, as
    one-channel or one-pixel frames are: those take the NCHW kernel)."""
    return x.dim() == 5 and not x.is_contiguous() and x.permute(0, 1, 3, 4, 2).is_contiguous()


def _frames_last(t: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    return t.permute(0, 1, 3, 4, 2).to(dtype or t.dtype).contiguous()  # no copy if channels-last already


@torch.library.custom_op("cmrvsr::window_conv3x3_nhwc", mutates_args=())
def _window_conv3x3_nhwc_op(
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


@_window_conv3x3_nhwc_op.register_fake
def _(x, frame, w, bias, codes, maps, residual):
    return x.new_empty(frame.shape[0], x.shape[1], x.shape[3], x.shape[4], w.shape[1]).permute(0, 1, 4, 2, 3)


def window_conv3x3(
    x: Tensor, frame: Tensor, w: Tensor, bias: Tensor, codes: Tensor | None = None, maps: Tensor | None = None,
    residual: Tensor | None = None, backend: str = "auto",
) -> Tensor:  # fmt: skip
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
    chosen = resolve_backend(backend, x.device, "window_conv3x3", cuda_twin=True)
    if chosen == "triton":
        op = _window_conv3x3_nhwc_op if frames_channels_last(x) else _window_conv3x3_op
        return op(x, frame, w, bias, codes, maps, residual)
    if chosen == "cuda":
        return _window_conv3x3_cuda(x, frame, w, bias, codes, maps, residual)
    return window_conv3x3_ref(x, frame, w, bias, codes, maps, residual)


def _window_conv3x3_cuda(
    x: Tensor, frame: Tensor, w: Tensor, bias: Tensor, codes: Tensor | None, maps: Tensor | None,
    residual: Tensor | None,
) -> Tensor:  # fmt: skip
    """The CUDA C++ twin (csrc/phase_fusion.cu) through the extension's pointer-and-stream launcher."""
    from cmrvsr_fast.ops import extension as _ext
    from cmrvsr_fast.ops.convlstm import DTYPE_CODES

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
        DTYPE_CODES[x.dtype], x.data_ptr(), frame.data_ptr(), w.data_ptr(), bias.data_ptr(), pointer(codes),
        pointer(maps), pointer(residual), out.data_ptr(), positions, window, batch, in_channels, w.shape[1], height,
        width, torch.cuda.current_stream(x.device).cuda_stream,
    )  # fmt: skip
    if error:
        raise RuntimeError(f"window_conv3x3 (CUDA): {error}")
    return out
