"""The fused ConvLSTM step: public function, its reference twin, the torch.library op and the dispatch.

convlstm_step(h, w, gx, c) for D directions at once (D = 2 in the Engine):
    h  (D, B, F, H, W)   hidden state, compute dtype
    w  (D, 4F, F, 3, 3)  recurrent weights, gate blocks (i, f, o, g), compute dtype
    gx (D, B, 4F, H, W)  hoisted input-to-gates convolution + bias for this step, compute dtype
    c  (D, B, F, H, W)   cell state, float32
returns (h', c'): h' in the compute dtype, c' float32.

Backends: "reference" (PyTorch, any device), "triton" (kernels/convlstm.py: CUDA tensors, or CPU tensors under
TRITON_INTERPRET=1), "cuda" (csrc/convlstm.cu through cmrvsr_fast._C, CUDA tensors). "auto" picks Triton, then
CUDA C++, and logs once why it fell back to the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .dispatch import resolve_backend


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


DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}  # csrc/convlstm.h


def _convlstm_step_cuda(h: Tensor, w: Tensor, gx: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """The CUDA C++ twin (csrc/convlstm.cu) through the extension's pointer-and-stream launcher."""
    from .. import _ext

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
