"""ONNX export of the unrolled schedule (and of one ConvLSTM step), checked with onnx.checker, with a manifest.

The graph: inputs `lr` (B, T, 1, H, W) float32 normalised and `phase` (B, T) float32, output `sr`
(B, T, 1, rH, rW) float32; T, H, W static (the phase-code maps and the unrolled recurrence depend on them), the
batch dynamic unless --batch is given. The TorchScript-based exporter is used (dynamo=False): it needs only the
`onnx` package and unrolls the Python loops of the schedule as they are.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import onnx
import torch

from cmrvsr_fast.atomic import atomic_write
from cmrvsr_fast.model.checkpoint import ModelCard
from cmrvsr_fast.model.network import CMRVSR

from .graphs import LstmStep, Schedule, example_inputs
from .manifest import Manifest

OPSET = 17


def _export(module: torch.nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], dynamic) -> None:
    def write(tmp: str) -> None:
        with warnings.catch_warnings():  # the tracer warns about every Python int it freezes into the graph
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                args,
                tmp,
                input_names=inputs,
                output_names=outputs,
                opset_version=OPSET,
                dynamic_axes=dynamic,
                do_constant_folding=True,
                dynamo=False,
            )
        onnx.checker.check_model(tmp, full_check=True)

    atomic_write(path, write, keep_suffix=True)


def export_onnx(
    model: CMRVSR,
    card: ModelCard,
    path: str | os.PathLike[str],
    frames: int,
    height: int,
    width: int,
    batch: int | None = None,
) -> Manifest:
    """Write the whole multi-stage schedule for T = frames centre frames to `path`, its manifest beside it, and
    a single-step ConvLSTM graph to `<path stem>.step.onnx` (with its own manifest)."""
    path = Path(path)
    model = model.eval().cpu()
    lr, phase = example_inputs(batch or 1, frames, height, width)
    dynamic = None if batch else {"lr": {0: "batch"}, "phase": {0: "batch"}, "sr": {0: "batch"}}
    with torch.no_grad():
        _export(Schedule(model, (height, width)), (lr, phase), path, ["lr", "phase"], ["sr"], dynamic)
    manifest = _manifest(card, path, frames, height, width, batch)
    manifest.write(path)

    f, layers = model.config.features, model.config.lstm_layers
    step_path = path.with_name(path.stem + ".step.onnx")
    state = torch.zeros(2, layers, batch or 1, f, height, width)
    batch_dims = {"x": 1, "h": 2, "c": 2, "top": 1, "h_next": 2, "c_next": 2}
    step_dynamic = None if batch else {name: {dim: "batch"} for name, dim in batch_dims.items()}
    with torch.no_grad():
        _export(LstmStep(model), (torch.randn(2, batch or 1, f, height, width), state, state), step_path,
                ["x", "h", "c"], ["top", "h_next", "c_next"], step_dynamic)  # fmt: skip
    _manifest(card, step_path, 1, height, width, batch).write(step_path)
    return manifest


def _manifest(card: ModelCard, path: Path, frames: int, height: int, width: int, batch: int | None) -> Manifest:
    versions = {"torch": torch.__version__, "onnx": onnx.__version__, "opset": str(OPSET)}
    return Manifest.describe("onnx", path, card, "fp32", (frames, height, width), batch, versions=versions)
