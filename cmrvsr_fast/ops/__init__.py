"""The fused ops, one file each: the public op, its PyTorch reference beside it, the torch.library registration
of its Triton kernel and its CUDA C++ twin; cmrvsr_fast/ops/backends.py decides which backend runs."""

from cmrvsr_fast.ops.convlstm import convlstm_layer, convlstm_layer_ref, convlstm_step_ref, lstm_cell
from cmrvsr_fast.ops.phase_fusion import window_conv3x3, window_conv3x3_ref

__all__ = [
    "convlstm_layer",
    "convlstm_layer_ref",
    "convlstm_step_ref",
    "lstm_cell",
    "window_conv3x3",
    "window_conv3x3_ref",
]
