"""The phase fusion as a window-decomposed 3×3 convolution: public function, reference twin, torch.library op
and dispatch (kernels/phase_fusion.py has the Triton kernel and the layouts).

window_conv3x3(x, frame, w, bias, codes=None, maps=None, residual=None, backend="auto") -> (P, B, O, H, W):
    out[p] = bias + Σ_d [conv3×3(x[frame[p, d]], w[d]) + codes[frame[p, d]] · maps[d]] (+ residual[p]),
    skipping offsets whose frame index is −1. The Engine calls it twice per stage: the fusion over the window
    of [h_fwd, h_bwd] with the phase term, then the projection (window 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .dispatch import resolve_backend


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


def window_conv3x3(
    x: Tensor, frame: Tensor, w: Tensor, bias: Tensor, codes: Tensor | None = None, maps: Tensor | None = None,
    residual: Tensor | None = None, backend: str = "auto",
) -> Tensor:  # fmt: skip
    if (codes is None) != (maps is None):
        raise ValueError("window_conv3x3: codes and maps come together")
    if w.shape[0] != frame.shape[1] or w.shape[2] != x.shape[2]:
        raise ValueError(f"window_conv3x3: w {tuple(w.shape)} does not fit window {frame.shape[1]} and "
                         f"{x.shape[2]} input channels")  # fmt: skip
    if resolve_backend(backend, x.device, "window_conv3x3") == "triton":
        return _window_conv3x3_op(x, frame, w, bias, codes, maps, residual)
    return window_conv3x3_ref(x, frame, w, bias, codes, maps, residual)
