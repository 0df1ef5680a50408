"""cmrvsr_fast: phase-aware video super-resolution for cardiac MRI cines.

The reference network (CMRVSR) defines the numbers; fast paths are held to it by parity tests. The public names
below are imported on first use, so that `import cmrvsr_fast.io` (DICOM and NIfTI only) does not load the model,
the Engine or the kernels. docs/api.md lists them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from cmrvsr_fast._version import __version__

# public name -> the module that defines it
_PUBLIC = {
    "CMRVSR": "cmrvsr_fast.model.network",
    "deep_supervision_loss": "cmrvsr_fast.model.network",
    "ModelConfig": "cmrvsr_fast.model.config",
    "PRESETS": "cmrvsr_fast.model.config",
    "ModelCard": "cmrvsr_fast.model.checkpoint",
    "load_checkpoint": "cmrvsr_fast.model.checkpoint",
    "save_checkpoint": "cmrvsr_fast.model.checkpoint",
    "import_official_checkpoint": "cmrvsr_fast.model.checkpoint",
    "Engine": "cmrvsr_fast.inference.engine",
    "Upscaler": "cmrvsr_fast.inference.upscaler",
    "load": "cmrvsr_fast.inference.upscaler",
    "estimate_es": "cmrvsr_fast.cardiac.phase",
    "phase_code": "cmrvsr_fast.cardiac.phase",
    "heart_box": "cmrvsr_fast.cardiac.roi",
}

__all__ = [
    "CMRVSR",
    "PRESETS",
    "Engine",
    "ModelCard",
    "ModelConfig",
    "Upscaler",
    "__version__",
    "deep_supervision_loss",
    "estimate_es",
    "heart_box",
    "import_official_checkpoint",
    "load",
    "load_checkpoint",
    "phase_code",
    "save_checkpoint",
]

if TYPE_CHECKING:
    from cmrvsr_fast.cardiac.phase import estimate_es, phase_code
    from cmrvsr_fast.cardiac.roi import heart_box
    from cmrvsr_fast.inference.engine import Engine
    from cmrvsr_fast.inference.upscaler import Upscaler, load
    from cmrvsr_fast.model.checkpoint import ModelCard, import_official_checkpoint, load_checkpoint, save_checkpoint
    from cmrvsr_fast.model.config import PRESETS, ModelConfig
    from cmrvsr_fast.model.network import CMRVSR, deep_supervision_loss


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'cmrvsr_fast' has no attribute {name!r}")
    value = getattr(import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
