"""The Engine's memory layouts, audited op by op on the CPU in its GPU configuration.

A GPU pass loses much of its time to layouts where they mix: adds of channels-last refine maps to NCHW features
on mismatched strides, cuDNN's layout transforms and NCHW ↔ NHWC conversions. Every frame tensor is
channels-last; these tests keep it so without a GPU: under a TorchDispatchMode every aten op
of a pass is checked — each convolution's input is channels-last, no arithmetic reads operands laid out in
different orders, and the only copies that change a layout are the few that do not grow with the network's
channels or steps (the LR input's frames, the phase maps) and the OutBlock's pixel shuffle, which is one by design.
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_inputs, make_model
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

import cmrvsr_fast.inference.engine as engine_module
from cmrvsr_fast import ModelConfig
from cmrvsr_fast.inference.engine import Engine
from cmrvsr_fast.ops.convlstm import convlstm_layer_ref

COPIES = {torch.ops.aten.clone.default, torch.ops.aten.copy_.default, torch.ops.aten._to_copy.default}


def stride_order(t: torch.Tensor) -> tuple[int, ...]:
    """The dims of size > 1 from the outermost in memory to the innermost."""
    return tuple(sorted((d for d in range(t.dim()) if t.shape[d] > 1), key=lambda d: -t.stride(d)))


class LayoutAudit(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.conv_inputs: list[torch.Tensor] = []
        self.mixed_arithmetic: list[str] = []
        self.layout_copies: list[tuple[str, tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        result = out[0] if isinstance(out, (tuple, list)) else out
        if func is torch.ops.aten.convolution.default and args[0].dtype != torch.float64:  # (float64: phase maps)
            self.conv_inputs.append(torch.empty_like(args[0], device="meta"))
        if isinstance(result, torch.Tensor) and result.dim() >= 4:
            same_shape = [a for a in args if isinstance(a, torch.Tensor) and a.shape == result.shape]
            if len({stride_order(t) for t in [*same_shape, result]}) > 1:
                if func in COPIES:
                    self.layout_copies.append((str(func), tuple(result.shape)))
                else:
                    self.mixed_arithmetic.append(f"{func} on {[tuple(t.stride()) for t in same_shape]}")
        return out


def audit_a_pass(config: ModelConfig, fused: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[LayoutAudit, dict]:
    """One bf16 pass as on a GPU: frame channels aligned; with `fused`, the recurrence through the layer op (its
    reference twin, run outside the audit: on a GPU it is one Triton kernel, checked for what it is given)."""
    monkeypatch.setattr(Engine, "ALIGN_FRAME_CHANNELS_ON", ("cpu", "cuda"))
    given = []

    def layer(gx_fwd, gx_bwd, w, backend):
        given.extend([gx_fwd, gx_bwd])
        with _disable_current_modes():
            return convlstm_layer_ref(gx_fwd, gx_bwd, w)

    monkeypatch.setattr(engine_module, "convlstm_layer", layer)
    engine = Engine(make_model(config).eval(), dtype=torch.bfloat16, schedule="hoisted")  # the GPU's schedule
    if fused:
        engine.backends["convlstm_layer"] = "triton"  # the path of backend="auto" on a GPU, minus the kernel
    lr, phase = make_inputs(2, 5, 8, 7)
    with torch.no_grad(), LayoutAudit() as audit:
        engine(lr, phase)
    return audit, {"layer_inputs": given, "lr": lr, "engine": engine}


CONFIGS = {
    "paper-x4": ModelConfig.from_name("paper-x4"),
    "short-warmup": ModelConfig(scale=4, features=8, lstm_layers=2, window=5, warmup=1, stages=2),  # zero frames
}


@pytest.mark.parametrize("fused", [True, False], ids=["layer-op", "pytorch-steps"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_frame_tensor_stays_channels_last(name: str, fused: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    config = CONFIGS[name]
    audit, seen = audit_a_pass(config, fused, monkeypatch)
    assert audit.conv_inputs and all(x.is_contiguous(memory_format=torch.channels_last) for x in audit.conv_inputs), (
        "a convolution read NCHW input (cuDNN would transform it, or run an NCHW kernel)"
    )
    assert audit.mixed_arithmetic == [], "arithmetic on operands in different layouts"
    assert bool(seen["layer_inputs"]) == fused
    for gates in seen["layer_inputs"]:  # the Triton layer op reads each frame's gates channels-last
        assert gates.reshape(-1, *gates.shape[2:]).is_contiguous(memory_format=torch.channels_last)
    # The copies that change a layout: the OutBlock's pixel shuffles (one permuting copy each, 6-d), the LR
    # input's frames (one channel) and the phase maps (window × aligned frame channels × H × W, in some order).
    lr, engine = seen["lr"], seen["engine"]
    maps = sorted((config.window, config.frame_channels + engine.frame_pad, *lr.shape[-2:]))
    shuffles = [shape for _, shape in audit.layout_copies if len(shape) == 6]
    others = [(op, shape) for op, shape in audit.layout_copies if len(shape) != 6]
    assert len(shuffles) == len(engine.up)
    assert all(torch.Size(shape).numel() <= lr.numel() or sorted(shape) == maps for _, shape in others), others
