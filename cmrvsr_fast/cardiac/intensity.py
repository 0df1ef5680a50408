"""Intensity handling shared by the heuristics and the data pipeline (docs/model.md, "Degradation")."""

from __future__ import annotations

import numpy as np


def intensity_window(volume: np.ndarray) -> tuple[float, float]:
    """(low, ceiling) of the training data's preparation: the ceiling is the 99.5 % point of the intensity
    distribution, low the minimum of the clipped volume (its minimum, unless the ceiling lies below it).

    Integer data follow the public implementation exactly: a histogram with unit bins from 0 to the maximum,
    clipped at the bin whose cumulative fraction is nearest 0.995. Float data use the 0.995 quantile."""
    data = np.asarray(volume)
    if data.size == 0:
        raise ValueError("intensity window: empty volume")
    if not np.isfinite(data).all():
        raise ValueError("intensity window: volume contains NaN or infinite values")
    if np.issubdtype(data.dtype, np.integer) and data.max() >= 1:
        hist, _ = np.histogram(data.ravel(), bins=range(int(data.max()) + 1), density=True)
        ceiling = float(np.abs(np.cumsum(hist) - 0.995).argmin())
    else:
        ceiling = float(np.quantile(data, 0.995))
    return min(float(data.min()), ceiling), ceiling


def to_window(volume: np.ndarray, low: float, ceiling: float) -> np.ndarray:
    """`volume` clipped at `ceiling` and mapped from [low, ceiling] to 0–255, unrounded (float64); ceiling > low."""
    return (np.minimum(np.asarray(volume, dtype=np.float64), ceiling) - low) / (ceiling - low) * 255.0


def clip_and_scale(volume: np.ndarray) -> np.ndarray:
    """Clip at the 99.5 % point of the intensity distribution, min–max scale to 0–255 and round -> float32
    (the window of `intensity_window`). A constant volume maps to zeros."""
    low, ceiling = intensity_window(volume)
    if ceiling <= low:
        return np.zeros(np.shape(volume), dtype=np.float32)
    return np.round(to_window(volume, low, ceiling)).astype(np.float32)


def to_display_range(cine: np.ndarray) -> np.ndarray:
    """A cine on the 0–255 scale the heuristics were designed for: returned as float64 if it already lies in
    [0, 255], otherwise passed through clip_and_scale."""
    data = np.asarray(cine, dtype=np.float64)
    if not np.isfinite(data).all():
        raise ValueError("cine contains NaN or infinite values")
    if data.min() >= 0.0 and data.max() <= 255.0:
        return data
    return clip_and_scale(data).astype(np.float64)
