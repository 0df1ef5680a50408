"""The fused ops are torch.library custom ops: torch.export keeps them as single nodes of the graph, torch.compile
traces them with fullgraph=True (their fake implementations give the output shapes), and torch.library.opcheck
finds their registration consistent — all with the Triton kernels under TRITON_INTERPRET=1 on the CPU."""

from __future__ import annotations

from conftest import run_under_triton_interpreter

TRACED = """
import torch
from kernel_helpers import fusion_case
from tolerances import relative_l2
from cmrvsr_fast.ops.convlstm import convlstm_layer, convlstm_layer_ref
from cmrvsr_fast.ops.phase_fusion import window_conv3x3

class Layer(torch.nn.Module):
    def forward(self, gx_fwd, gx_bwd, w):
        return convlstm_layer(gx_fwd, gx_bwd, w, backend="triton")

class Fusion(torch.nn.Module):
    def forward(self, x, frame, w, bias, codes, maps):
        return window_conv3x3(x, frame, w, bias, codes, maps, backend="triton")

fusion_args, expected = fusion_case(frames=3, batch=1)
# The same with the frames channels-last in memory (the Engine's layout; NCHW frames are converted inside the op).
x = fusion_args[0]
x_last = x.reshape(-1, *x.shape[2:]).contiguous(memory_format=torch.channels_last).reshape(x.shape)
fusion_last_args = (x_last, *fusion_args[1:])
torch.manual_seed(0)
layer_args = (torch.randn(3, 1, 16, 4, 5), torch.randn(3, 1, 16, 4, 5), 0.1 * torch.randn(2, 16, 4, 3, 3))
layer_ref = convlstm_layer_ref(*layer_args)
cases = [(Layer(), layer_args, "cmrvsr.convlstm_layer",
          lambda out: max(relative_l2(o, r) for o, r in zip(out, layer_ref))),
         (Fusion(), tuple(fusion_args), "cmrvsr.window_conv3x3", lambda out: relative_l2(out, expected)),
         (Fusion(), fusion_last_args, "cmrvsr.window_conv3x3", lambda out: relative_l2(out, expected))]
for module, args, op, error in cases:
    exported = torch.export.export(module, args)
    nodes = [n for n in exported.graph.nodes if n.op == "call_function"]
    assert [str(n.target) for n in nodes if "cmrvsr" in str(n.target)] == [op + ".default"], exported.graph
    assert error(exported.module()(*args)) <= 1e-5
    assert error(torch.compile(module, fullgraph=True)(*args)) <= 1e-5
torch.library.opcheck(torch.ops.cmrvsr.convlstm_layer.default, layer_args)
torch.library.opcheck(torch.ops.cmrvsr.window_conv3x3.default, (*fusion_args, None))
torch.library.opcheck(torch.ops.cmrvsr.window_conv3x3.default, (*fusion_last_args, None))
print("traced")
"""


def test_export_compile_and_opcheck_see_the_custom_ops():
    assert "traced" in run_under_triton_interpreter(TRACED)
