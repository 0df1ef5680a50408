"""AOTInductor: torch.export of the schedule, compiled and packaged to a `.pt2` for the CPU or a CUDA device.

The package is callable as (lr, phase) -> sr with the static shapes it was exported for (batch included:
AOTInductor specialises the unrolled recurrence to them). Precision: the Engine's dtype inside the package
(fp32, bf16, fp16), inputs and output float32 as for every other artifact.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from cmrvsr_fast.atomic import atomic_write
from cmrvsr_fast.model.checkpoint import ModelCard
from cmrvsr_fast.model.network import CMRVSR

from .graphs import Schedule, example_inputs
from .manifest import Manifest

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def export_aoti(
    model: CMRVSR,
    card: ModelCard,
    path: str | os.PathLike[str],
    frames: int,
    height: int,
    width: int,
    batch: int = 1,
    precision: str = "fp32",
    device: str = "cpu",
) -> Manifest:
    if precision not in DTYPES:
        raise ValueError(f"precision must be one of {sorted(DTYPES)}, got {precision!r}")
    path = Path(path)
    module = Schedule(model.eval().to(device), (height, width), DTYPES[precision])
    lr, phase = (t.to(device) for t in example_inputs(batch, frames, height, width))
    with torch.no_grad():
        program = torch.export.export(module, (lr, phase))

        def write(tmp: str) -> None:
            torch._inductor.aoti_compile_and_package(program, package_path=tmp)

        atomic_write(path, write, keep_suffix=True)
    device_facts = {}
    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(device)
        device_facts = {"name": props.name, "compute_capability": f"{props.major}.{props.minor}"}
    manifest = Manifest.describe(
        "aoti", path, card, precision, (frames, height, width), batch,
        versions={"torch": torch.__version__}, device={"type": torch.device(device).type, **device_facts},
    )  # fmt: skip
    manifest.write(path)
    return manifest
