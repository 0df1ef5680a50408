"""Data: the cine phantom, the degradation (docs/model.md), intensity preparation, dataset readers, torch datasets."""

from cmrvsr_fast.data.degrade import bicubic_resize, degrade, truncate_kspace
from cmrvsr_fast.data.phantom import Phantom, generate
from cmrvsr_fast.data.preprocess import clip_and_scale, crop_to_multiple, denormalise, normalise

__all__ = [
    "Phantom",
    "bicubic_resize",
    "clip_and_scale",
    "crop_to_multiple",
    "degrade",
    "denormalise",
    "generate",
    "normalise",
    "truncate_kspace",
]
