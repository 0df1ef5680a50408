"""Pictures for people: grey-level montages of cine frames written as PNG."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from .atomic import atomic_write


def montage(rows: list[list[np.ndarray]], gap: int = 2, scale: int = 1) -> np.ndarray:
    """Tile 2-D frames (0–255 scale) into one uint8 image: rows of equal-height frames, a black gap between them.
    Frames of different sizes in a column are centred in a cell of the column's largest size."""
    if not rows or not all(rows):
        raise ValueError("montage needs at least one non-empty row")
    columns = max(len(r) for r in rows)
    cell_h = max(f.shape[0] for r in rows for f in r) * scale
    cell_w = max(f.shape[1] for r in rows for f in r) * scale
    canvas = np.zeros((len(rows) * (cell_h + gap) - gap, columns * (cell_w + gap) - gap), dtype=np.uint8)
    for i, row in enumerate(rows):
        for j, frame in enumerate(row):
            tile = np.kron(np.clip(np.round(frame), 0, 255), np.ones((scale, scale))).astype(np.uint8)
            top = i * (cell_h + gap) + (cell_h - tile.shape[0]) // 2
            left = j * (cell_w + gap) + (cell_w - tile.shape[1]) // 2
            canvas[top : top + tile.shape[0], left : left + tile.shape[1]] = tile
    return canvas


def save_png(image: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write a uint8 grey image as PNG through a temporary file, so a reader never sees half of it."""
    grey = Image.fromarray(np.asarray(image, dtype=np.uint8), mode="L")
    return atomic_write(path, lambda tmp: grey.save(tmp, format="PNG"))
