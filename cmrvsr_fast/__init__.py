"""cmrvsr_fast: phase-aware video super-resolution for cardiac MRI cines.

The reference network (CMRVSR) defines the numbers; fast paths are held to it by parity tests.
"""

from .checkpoint import ModelCard, import_official_checkpoint, load_checkpoint, save_checkpoint
from .config import PRESETS, ModelConfig
from .model import CMRVSR, deep_supervision_loss
from .phase import estimate_es, phase_code
from .roi import heart_box
from .upscaler import Upscaler, load

__version__ = "0.1.0"

__all__ = [
    "CMRVSR",
    "PRESETS",
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
