"""Fused ops, one file each: the public function, its `_ref` twin, the torch.library registration and the
dispatch between backends (see DESIGN.md, "One op, one name, every layer")."""

from cmrvsr_fast.ops.convlstm import convlstm_step, convlstm_step_ref
from cmrvsr_fast.ops.phase_fusion import window_conv3x3, window_conv3x3_ref

__all__ = ["convlstm_step", "convlstm_step_ref", "window_conv3x3", "window_conv3x3_ref"]
