"""The ConvLSTM recurrence as one op, with its reference beside it: the cell mathematics, written once here, serve
the reference model's ConvLSTMCell, the reference step and the reference layer (the Engine's PyTorch path).

convlstm_layer(gx_fwd, gx_bwd, w, backend="auto") runs the whole recurrence of one bidirectional layer:
    gx_fwd, gx_bwd  (E, B, 4F, H, W)  each direction's hoisted input-to-gates convolution plus bias at every frame
                                       (gate blocks i, f, o, g), compute dtype
    w               (2, 4F, F, 3, 3)  recurrent weights of the two directions, compute dtype
returns (h_fwd, h_bwd), each (E, B, F, H, W) with every frame channels-last: the forward direction's h at every
frame and the backward one's (run from the last frame). The cell state stays float32 throughout.
Backends (cmrvsr_fast/ops/backends.py decides): "torch" runs `convlstm_layer_ref`; "triton" the channels-last layer
kernel (kernels/convlstm_nhwc.py: one launch per step reading and writing the sequence buffers in place; gx
channels-last per frame, as the Engine's convolutions make them); "cuda" a loop of the CUDA C++ step
(csrc/convlstm.cu), `convlstm_step_cuda`.

convlstm_step_ref(h, w, gx, c) is one step of D directions in the CUDA step's layout, for its tests:
    h (D, B, F, H, W), w (D, 4F, F, 3, 3), gx (D, B, 4F, H, W), c (D, B, F, H, W) float32 -> (h', c').
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from cmrvsr_fast.ops.backends import resolve_backend


def lstm_cell(gates: Tensor, c: Tensor, dim: int = 1) -> tuple[Tensor, Tensor]:
    """The ConvLSTM cell: gates with blocks (i, f, o, g) along `dim` -> c' = σ(f)·c + σ(i)·tanh(g),
    h' = σ(o)·tanh(c'), in the dtype the gates and c promote to (the callers choose float32 or not)."""
    i, f, o, g = gates.chunk(4, dim)
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c_next), c_next


def lstm_cell_(gates: Tensor, c: Tensor, h_out: Tensor, scratch: Tensor) -> None:
    """`lstm_cell` in place, allocating nothing: gates (B, 4F, H, W) float32 are overwritten by their
    activations, c (B, F, H, W) float32 becomes c', h' is written into h_out (any dtype, any strides); scratch is
    a float32 (B, F, H, W) buffer. The CPU schedule's cell (inference/stepwise.py)."""
    f = c.shape[1]
    gates[:, : 3 * f].sigmoid_()  # i, f, o
    gates[:, 3 * f :].tanh_()  # g
    i, forget, o, g = gates.chunk(4, 1)
    c.mul_(forget).addcmul_(i, g)
    h_out.copy_(torch.tanh(c, out=scratch).mul_(o))


def convlstm_step_ref(h: Tensor, w: Tensor, gx: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """One step of D directions as PyTorch ops: one grouped convolution for all of them, the cell in float32."""
    directions, batch, features, height, width = h.shape
    stacked = h.permute(1, 0, 2, 3, 4).reshape(batch, directions * features, height, width)
    gates = F.conv2d(stacked, w.reshape(directions * 4 * features, features, 3, 3), padding=1, groups=directions)
    gates = gates.reshape(batch, directions, 4 * features, height, width).permute(1, 0, 2, 3, 4).float() + gx
    h_next, c_next = lstm_cell(gates, c, dim=2)
    return h_next.to(h.dtype), c_next


def convlstm_bidirectional_step(
    h: Tensor, w: Tensor, gx_fwd: Tensor, gx_bwd: Tensor, c_fwd: Tensor, c_bwd: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """One step of both directions, the reference layer's step: h = [h_fwd, h_bwd] (B, 2F, H, W) channels-last,
    w (8F, F, 3, 3) both directions' recurrent weights (one grouped convolution), gx_fwd and gx_bwd (B, 4F, H, W)
    the hoisted gates of each direction's frame, c_fwd and c_bwd (B, F, H, W) float32. Returns h' (channels-last,
    h's dtype), c_fwd', c_bwd'. The gates are summed and the cell computed in float32, as the kernels do."""
    gates_fwd, gates_bwd = F.conv2d(h, w, padding=1, groups=2).float().chunk(2, dim=1)
    h_fwd, c_fwd = lstm_cell(gates_fwd + gx_fwd, c_fwd)
    h_bwd, c_bwd = lstm_cell(gates_bwd + gx_bwd, c_bwd)
    h_next = torch.cat([h_fwd.to(h.dtype), h_bwd.to(h.dtype)], dim=1)
    return h_next.contiguous(memory_format=torch.channels_last), c_fwd, c_bwd


StepFunction = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]


def convlstm_layer_ref(
    gx_fwd: Tensor, gx_bwd: Tensor, w: Tensor, step: StepFunction = convlstm_bidirectional_step
) -> tuple[Tensor, Tensor]:
    """The layer as PyTorch ops: both directions advance together, one `step` per frame (the Engine passes
    `convlstm_bidirectional_step` through torch.compile), h scattered into channels-last sequence buffers."""
    frames, batch, gates, height, width = gx_fwd.shape
    f = gates // 4
    # Channels-last like every later state (a step's output follows its input's layout): a compiled step then
    # sees one layout, not a first-step variant to compile again.
    h = _frames_last_buffer(batch, 2 * f, height, width, gx_fwd.dtype, gx_fwd.device).zero_()
    c_fwd = _frames_last_buffer(batch, f, height, width, torch.float32, gx_fwd.device).zero_()
    c_bwd = torch.zeros_like(c_fwd)
    out_fwd = _frames_last_buffer(frames * batch, f, height, width, gx_fwd.dtype, gx_fwd.device)
    out_fwd = out_fwd.reshape(frames, batch, f, height, width)
    out_bwd = torch.empty_like(out_fwd)
    w_both = w.flatten(0, 1)  # (8F, F, 3, 3): the forward direction's gates, then the backward one's
    for k in range(frames):
        j = frames - 1 - k  # the backward direction's frame
        h, c_fwd, c_bwd = step(h, w_both, gx_fwd[k], gx_bwd[j], c_fwd, c_bwd)
        out_fwd[k], out_bwd[j] = h[:, :f], h[:, f:]
    return out_fwd, out_bwd


def _frames_last_buffer(n: int, channels: int, height: int, width: int, dtype, device) -> Tensor:
    return torch.empty(n, channels, height, width, dtype=dtype, device=device, memory_format=torch.channels_last)


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
    chosen = resolve_backend("convlstm_layer", backend, gx_fwd.device)
    if chosen == "triton":
        return _convlstm_layer_op(gx_fwd, gx_bwd, w)
    if chosen == "cuda":
        return _convlstm_layer_cuda(gx_fwd, gx_bwd, w)
    return convlstm_layer_ref(gx_fwd, gx_bwd, w)


def _convlstm_layer_cuda(gx_fwd: Tensor, gx_bwd: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """The layer as a loop of CUDA C++ steps: the two directions' gates stacked and their h scattered per step."""
    frames, batch, gates, height, width = gx_fwd.shape
    f = gates // 4
    h = gx_fwd.new_zeros(2, batch, f, height, width)
    c = torch.zeros(2, batch, f, height, width, dtype=torch.float32, device=gx_fwd.device)
    out_fwd = _frames_last_buffer(frames * batch, f, height, width, gx_fwd.dtype, gx_fwd.device)
    out_fwd = out_fwd.reshape(frames, batch, f, height, width)
    out_bwd = torch.empty_like(out_fwd)
    for k in range(frames):
        j = frames - 1 - k  # the backward direction's frame
        h, c = convlstm_step_cuda(h, w, torch.stack([gx_fwd[k], gx_bwd[j]]), c)
        out_fwd[k], out_bwd[j] = h[0], h[1]
    return out_fwd, out_bwd


def convlstm_step_cuda(h: Tensor, w: Tensor, gx: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """One step of D directions through the CUDA C++ twin (csrc/convlstm.cu), in `convlstm_step_ref`'s layout,
    through the extension's pointer-and-stream launcher."""
    from cmrvsr_fast.ops import extension as _ext

    h, w, gx, c = (t.contiguous() for t in (h, w, gx, c))
    h_out, c_out = torch.empty_like(h), torch.empty_like(c)
    directions, batch, features, height, width = h.shape
    stream = torch.cuda.current_stream(h.device).cuda_stream
    error = _ext.extension().convlstm_step(
        _ext.DTYPE_CODES[h.dtype], h.data_ptr(), w.data_ptr(), gx.data_ptr(), c.data_ptr(), h_out.data_ptr(),
        c_out.data_ptr(), directions, batch, features, height, width, stream,
    )  # fmt: skip
    if error:
        raise RuntimeError(f"convlstm_step (CUDA): {error}")
    return h_out, c_out


def _check_layer(gx_fwd: Tensor, gx_bwd: Tensor, w: Tensor) -> None:
    if gx_fwd.dim() != 5 or gx_fwd.shape[2] % 4 or gx_bwd.shape != gx_fwd.shape:
        raise ValueError(f"convlstm_layer: gx_fwd and gx_bwd must both be (E, B, 4F, H, W), got "
                         f"{tuple(gx_fwd.shape)} and {tuple(gx_bwd.shape)}")  # fmt: skip
    f = gx_fwd.shape[2] // 4
    if tuple(w.shape) != (2, 4 * f, f, 3, 3):
        raise ValueError(f"convlstm_layer: w has shape {tuple(w.shape)}, expected {(2, 4 * f, f, 3, 3)}")
    if w.dtype != gx_fwd.dtype or gx_bwd.dtype != gx_fwd.dtype:
        raise ValueError(f"convlstm_layer: gx and w must share a dtype, got {gx_fwd.dtype}, {gx_bwd.dtype}, {w.dtype}")
