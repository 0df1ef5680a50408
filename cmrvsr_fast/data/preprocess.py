"""Intensity preparation shared by every data source (docs/model.md)."""

from __future__ import annotations

import numpy as np

from cmrvsr_fast.cardiac.intensity import clip_and_scale
from cmrvsr_fast.model.checkpoint import NORMALISATION

__all__ = ["NORMALISATION", "clip_and_scale", "crop_to_multiple", "denormalise", "normalise"]


def crop_to_multiple(data: np.ndarray, multiple: int = 12) -> np.ndarray:
    """Centre-crop the last two axes down to multiples of `multiple` (12 lets ×2, ×3 and ×4 all divide), the
    odd pixel going to the far side as in the public preprocessing."""
    height, width = data.shape[-2:]
    if height < multiple or width < multiple:
        raise ValueError(f"a {height}×{width} image is smaller than {multiple}×{multiple}")
    dh, dw = height % multiple, width % multiple
    return data[..., dh // 2 : height - (dh - dh // 2), dw // 2 : width - (dw - dw // 2)]


def normalise(data: np.ndarray, mean: float, std: float) -> np.ndarray:
    """0–255 intensities -> the network's input scale."""
    return (np.asarray(data, dtype=np.float32) - mean) / std


def denormalise(data: np.ndarray, mean: float, std: float) -> np.ndarray:
    """The network's output scale -> 0–255 intensities (not clipped or rounded)."""
    return np.asarray(data, dtype=np.float32) * std + mean
