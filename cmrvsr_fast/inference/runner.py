"""What the Upscaler runs a network through: the `NetworkRunner` protocol, and `EngineRunner`, a checkpoint's
model run by the Engine. The exported artifacts' runners (cmrvsr_fast.export.runners) implement the same
protocol, so the Upscaler treats a checkpoint and an ONNX, TensorRT or AOTInductor artifact alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from cmrvsr_fast.inference.engine import Engine
from cmrvsr_fast.model.checkpoint import ModelCard
from cmrvsr_fast.model.network import CMRVSR

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@runtime_checkable
class NetworkRunner(Protocol):
    """A network the Upscaler can run: normalised (N, T, 1, H, W) LR cines and their (N, T) phase codes in,
    (N, T, 1, rH, rW) float32 out, plus the facts the Upscaler plans its passes and records its outputs with."""

    @property
    def card(self) -> ModelCard:
        """Configuration (scale, phase code), normalisation and the hash of the source weights."""

    @property
    def device(self) -> torch.device:
        """Where the Upscaler puts each pass's input."""

    @property
    def precision(self) -> str:
        """fp32, bf16 or fp16: recorded with every output."""

    @property
    def backend(self) -> str:
        """What computes the pass: recorded with every output (it enters the derived UIDs)."""

    @property
    def memory_budget_mb(self) -> float | None:
        """How much memory one pass may take (None: no budget of its own)."""

    def __call__(self, lr: Tensor, phase: Tensor, stages: int | None = None) -> Tensor: ...

    def cines_per_pass(self, frames: int, height: int, width: int, cines: int) -> int:
        """How many of `cines` cines of this size one pass takes."""

    def working_set_bytes(self, frames: int, height: int, width: int) -> int | None:
        """Memory one cine of this size needs in a pass; None for a runner of fixed input shapes, which is
        never run in tiles."""


def native_bf16(device: torch.device) -> bool:
    """Whether bfloat16 is fast here: CPUs with AVX512-BF16 or AMX, CUDA GPUs that support it (Ampere on)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = torch.cpu
    return bool(
        getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
        or getattr(cpu, "_is_amx_tile_supported", lambda: False)()
    )


def default_memory_budget_mb(device: torch.device) -> float:
    """How much memory one pass over a slice stack may take: half of the GPU's free memory, 4 GiB on a CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free / 2**20 / 2
    return 4096.0


class EngineRunner:
    """A model run by the Engine (engine.py), as many slices per pass as fit the memory budget; precision "auto"
    picks bfloat16 where the hardware runs it natively, float32 elsewhere."""

    def __init__(
        self,
        model: CMRVSR,
        card: ModelCard,
        device: torch.device,
        precision: str = "auto",
        backend: str | Mapping[str, str] = "auto",
        compile: bool = False,
        cuda_graph: bool = False,
        cudnn_benchmark: bool = False,
    ) -> None:
        if precision == "auto":
            precision = "bf16" if native_bf16(device) else "fp32"
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}")
        self.model, self.card, self.device, self.precision = model.to(device).eval(), card, device, precision
        # Compiled for dynamic shapes: a job meets many matrix sizes and pass sizes, and static shapes would
        # recompile for each (past Dynamo's recompile limit, an error).
        self.engine = Engine(self.model, dtype=PRECISIONS[precision], device=device, backend=backend,
                             compile="dynamic" if compile else False, cuda_graph=cuda_graph,
                             cudnn_benchmark=cudnn_benchmark,
                             memory_budget_mb=default_memory_budget_mb(device))  # fmt: skip

    @property
    def backend(self) -> str:
        return self.engine.backend

    @property
    def memory_budget_mb(self) -> float | None:
        return self.engine.memory_budget_mb

    def __call__(self, lr: Tensor, phase: Tensor, stages: int | None = None) -> Tensor:
        return self.engine(lr, phase, stages=stages)

    def cines_per_pass(self, frames: int, height: int, width: int, cines: int) -> int:
        return self.engine.cines_per_pass(frames, height, width, cines=cines)

    def working_set_bytes(self, frames: int, height: int, width: int) -> int | None:
        return self.engine.working_set_bytes(frames, height, width)
