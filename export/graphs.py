"""The modules that exporters trace: the whole inference schedule, and one ConvLSTM step for streaming runtimes.

Recurrent convolutional networks break TensorRT's loop support, so the schedule is exported unrolled with static
T, H and W (the Engine's schedule: hoisted input convolutions, both directions per step, window-decomposed
fusion, fp32 cell state); only the batch may stay dynamic.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cmrvsr_fast.inference.engine import Engine
from cmrvsr_fast.model.network import CMRVSR


class Schedule(nn.Module):
    """(lr (B, T, 1, H, W) normalised, phase (B, T)) -> sr (B, T, 1, rH, rW) float32, as Engine computes it."""

    def __init__(
        self, model: CMRVSR, size: tuple[int, int], dtype: torch.dtype = torch.float32, stages: int | None = None
    ) -> None:
        super().__init__()
        # The hoisted schedule on any device: one graph for every runtime (the stepwise one, the Engine's default
        # on a CPU, updates buffers in place step by step, which exporters would unroll into copies).
        self.engine = Engine(model, dtype=dtype, schedule="hoisted")  # on the model's device
        self.stages = model.config.stages if stages is None else stages
        # The phase-code maps are computed now (in float64, then cast), so the graph holds them as constants.
        self.engine.phase_maps(*size)

    def forward(self, lr: Tensor, phase: Tensor) -> Tensor:
        return self.engine.forward_pass(lr, phase, self.stages)


class LstmStep(nn.Module):
    """One step of both ConvLSTM stacks: x (2, B, F, H, W) = [forward input, backward input] at this step;
    h, c (2, L, B, F, H, W) the states -> (top h (2, B, F, H, W), h', c'). The cell state stays float32."""

    def __init__(self, model: CMRVSR) -> None:
        super().__init__()
        self.directions = nn.ModuleList([model.lstm_forward, model.lstm_backward])

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        tops, new_h, new_c = [], [], []
        for d, stack in enumerate(self.directions):
            inputs, hs, cs = x[d], [], []
            for layer, cell in enumerate(stack.cells):
                h_next, c_next = cell(inputs, h[d, layer], c[d, layer])
                hs.append(h_next)
                cs.append(c_next)
                inputs = h_next
            tops.append(inputs)
            new_h.append(torch.stack(hs))
            new_c.append(torch.stack(cs))
        return torch.stack(tops), torch.stack(new_h), torch.stack(new_c)


def example_inputs(batch: int, frames: int, height: int, width: int) -> tuple[Tensor, Tensor]:
    torch.manual_seed(0)
    return torch.randn(batch, frames, 1, height, width), torch.rand(batch, frames) * 2 - 1
