"""The fused ConvLSTM step: public function, its reference twin, the torch.library op and the dispatch.

convlstm_step(h, w, gx, c) for D directions at once (D = 2 in the Engine):
    h  (D, B, F, H, W)   hidden state, compute dtype
    w  (D, 4F, F, 3, 3)  recurrent weights, gate blocks (i, f, o, g), compute dtype
    gx (D, B, 4F, H, W)  hoisted input-to-gates convolution + bias for this step, compute dtype
    c  (D, B, F, H, W)   cell state, float32
returns (h', c'): h' in the compute dtype, c' float32.

convlstm_layer(gx_fwd, gx_bwd, w) runs the whole recurrence of one bidirectional layer (what the Engine needs):
    gx_fwd, gx_bwd  (E, B, 4F, H, W)  each direction's hoisted gates at every frame
    w               (2, 4F, F, 3, 3)  recurrent weights of the two directions
returns (h_fwd, h_bwd), each (E, B, F, H, W): the forward direction's h at every frame and the backward one's (run
from the last frame). Triton runs it with no copy per step (kernels/convlstm_nhwc.py; gx channels-last per
frame, as the Engine's convolutions make them, and the outputs channels-last too); the other backends loop
convlstm_step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cmrvsr_fast.ops.backends import resolve_backend


def convlstm_step_ref(h: Tensor, w: Tensor, gx: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """The step as PyTorch ops: one grouped convolution for all directions, the cell in float32."""
    directions, batch, features, height, width = h.shape
    stacked = h.permute(1, 0, 2, 3, 4).reshape(batch, directions * features, height, width)
    gates = F.conv2d(stacked, w.reshape(directions * 4 * features, features, 3, 3), padding=1, groups=directions)
    gates = gates.reshape(batch, directions, 4 * features, height, width).permute(1, 0, 2, 3, 4).float() + gx.float()
    i, f, o, g = gates.split(features, dim=2)
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return (torch.sigmoid(o) * torch.tanh(c_next)).to(h.dtype), c_next


@torch.library.custom_op("cmrvsr::convlstm_step", mutates_args=())
def _convlstm_step_op(h: Tensor, w: Tensor, gx: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    from cmrvsr_fast.kernels.convlstm import convlstm_step as launch

    return launch(h.contiguous(), w.contiguous(), gx.contiguous(), c.contiguous())


@_convlstm_step_op.register_fake
def _(h: Tensor, w: Tensor, gx: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    return torch.empty_like(h), torch.empty_like(c)


def convlstm_step(h: Tensor, w: Tensor, gx: Tensor, c: Tensor, backend: str = "auto") -> tuple[Tensor, Tensor]:
    _check(h, w, gx, c)
    chosen = resolve_backend(backend, h.device, "convlstm_step", cuda_twin=True)
    if chosen == "triton":
        return _convlstm_step_op(h, w, gx, c)
    if chosen == "cuda":
        return _convlstm_step_cuda(h, w, gx, c)
    return convlstm_step_ref(h, w, gx, c)


def convlstm_layer_ref(gx_fwd: Tensor, gx_bwd: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """The layer as a loop of reference steps."""
    return _layer_by_steps(gx_fwd, gx_bwd, w, convlstm_step_ref)


def _frames_last(t: Tensor) -> Tensor:
    return t.permute(0, 1, 3, 4, 2).contiguous()  # (E, B, C, H, W) -> (E, B, H, W, C); no copy if channels-last


@torch.library.custom_op("cmrvsr::convlstm_layer", mutates_args=())
def _convlstm_layer_op(gx_fwd: Tensor, gx_bwd: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    from cmrvsr_fast.kernels.convlstm_nhwc import convlstm_layer_nhwc, pack_weights

    h_fwd, h_bwd = convlstm_layer_nhwc(_frames_last(gx_fwd), _frames_last(gx_bwd), pack_weights(w))
    return h_fwd.permute(0, 1, 4, 2, 3), h_bwd.permute(0, 1, 4, 2, 3)


@_convlstm_layer_op.register_fake
def _(gx_fwd: Tensor, gx_bwd: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    frames, batch, gates, height, width = gx_fwd.shape
    return tuple(gx_fwd.new_empty(frames, batch, height, width, gates // 4).permute(0, 1, 4, 2, 3) for _ in "fb")


def convlstm_layer(gx_fwd: Tensor, gx_bwd: Tensor, w: Tensor, backend: str = "auto") -> tuple[Tensor, Tensor]:
    _check_layer(gx_fwd, gx_bwd, w)
    chosen = resolve_backend(backend, gx_fwd.device, "convlstm_layer", cuda_twin=True)
    if chosen == "triton":
        return _convlstm_layer_op(gx_fwd, gx_bwd, w)
    return _layer_by_steps(gx_fwd, gx_bwd, w, _convlstm_step_cuda if chosen == "cuda" else convlstm_step_ref)


def _layer_by_steps(gx_fwd: Tensor, gx_bwd: Tensor, w: Tensor, step) -> tuple[Tensor, Tensor]:
    """The layer through a step function: the two directions' gates stacked and their h scattered per step."""
    frames, batch, gates, height, width = gx_fwd.shape
    f = gates // 4
    h = gx_fwd.new_zeros(2, batch, f, height, width)
    c = torch.zeros(2, batch, f, height, width, dtype=torch.float32, device=gx_fwd.device)
    # Each frame channels-last, as the Triton op's outputs and the Engine's other tensors are.
    out_fwd = torch.empty(frames * batch, f, height, width, dtype=gx_fwd.dtype, device=gx_fwd.device,
                          memory_format=torch.channels_last).reshape(frames, batch, f, height, width)  # fmt: skip
    out_bwd = torch.empty_like(out_fwd)
    for k in range(frames):
        j = frames - 1 - k  # the backward direction's frame
        h, c = step(h, w, torch.stack([gx_fwd[k], gx_bwd[j]]), c)
        out_fwd[k], out_bwd[j] = h[0], h[1]
    return out_fwd, out_bwd


DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}  # csrc/convlstm.h


def _convlstm_step_cuda(h: Tensor, w: Tensor, gx: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """The CUDA C++ twin (csrc/convlstm.cu) through the extension's pointer-and-stream launcher."""
    from cmrvsr_fast.ops import extension as _ext

    h, w, gx, c = (t.contiguous() for t in (h, w, gx, c))
    h_out, c_out = torch.empty_like(h), torch.empty_like(c)
    directions, batch, features, height, width = h.shape
    stream = torch.cuda.current_stream(h.device).cuda_stream
    error = _ext.extension().convlstm_step(
        DTYPE_CODES[h.dtype], h.data_ptr(), w.data_ptr(), gx.data_ptr(), c.data_ptr(), h_out.data_ptr(),
        c_out.data_ptr(), directions, batch, features, height, width, stream,
    )  # fmt: skip
    if error:
        raise RuntimeError(f"convlstm_step (CUDA): {error}")
    return h_out, c_out


def _check(h: Tensor, w: Tensor, gx: Tensor, c: Tensor) -> None:
    directions, batch, features, height, width = h.shape
    expected = {
        "w": (w, (directions, 4 * features, features, 3, 3)),
        "gx": (gx, (directions, batch, 4 * features, height, width)),
        "c": (c, (directions, batch, features, height, width)),
    }
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"convlstm_step: {name} has shape {tuple(tensor.shape)}, expected {shape}")
    if c.dtype != torch.float32:
        raise ValueError(f"convlstm_step: the cell state must be float32, got {c.dtype}")
    if w.dtype != h.dtype or gx.dtype != h.dtype:
        raise ValueError(f"convlstm_step: h, w and gx must share a dtype, got {h.dtype}, {w.dtype}, {gx.dtype}")


def _check_layer(gx_fwd: Tensor, gx_bwd: Tensor, w: Tensor) -> None:
    if gx_fwd.dim() != 5 or gx_fwd.shape[2] % 4 or gx_bwd.shape != gx_fwd.shape:
        raise ValueError(f"convlstm_layer: gx_fwd and gx_bwd must both be (E, B, 4F, H, W), got "
                         f"{tuple(gx_fwd.shape)} and {tuple(gx_bwd.shape)}")  # fmt: skip
    f = gx_fwd.shape[2] // 4
    if tuple(w.shape) != (2, 4 * f, f, 3, 3):
        raise ValueError(f"convlstm_layer: w has shape {tuple(w.shape)}, expected {(2, 4 * f, f, 3, 3)}")
    if w.dtype != gx_fwd.dtype or gx_bwd.dtype != gx_fwd.dtype:
        raise ValueError(f"convlstm_layer: gx and w must share a dtype, got {gx_fwd.dtype}, {gx_bwd.dtype}, {w.dtype}")
