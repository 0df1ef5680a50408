"""Pictures for people: grey-level montages of cine frames written as PNG."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from cmrvsr_fast.atomic import atomic_write


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
    return save_image(Image.fromarray(np.asarray(image, dtype=np.uint8), mode="L"), path)


def line_plot(
    series: dict[str, tuple[list[float], list[float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    size: tuple[int, int] = (720, 400),
) -> Image.Image:
    """A small line chart (one colour per series, a legend, labelled ticks) drawn with Pillow alone."""
    from PIL import ImageDraw

    width, height = size
    left, right, top, bottom = 70, 20, 40, 50
    xs = [x for xs_, _ in series.values() for x in xs_]
    ys = [y for _, ys_ in series.values() for y in ys_]
    if not xs:
        raise ValueError("line_plot needs at least one point")
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    pad = 0.05 * (max(ys) - min(ys) or 1.0)
    y0, y1 = min(ys) - pad, max(ys) + pad
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (
            left + (x - x0) / (x1 - x0) * (width - left - right),
            top + (y1 - y) / (y1 - y0) * (height - top - bottom),
        )

    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for i in range(6):
        xv, yv = x0 + i * (x1 - x0) / 5, y0 + i * (y1 - y0) / 5
        px, _ = to_px(xv, y0)
        _, py = to_px(x0, yv)
        draw.line([px, height - bottom, px, height - bottom + 4], fill="black")
        draw.text((px - 12, height - bottom + 6), f"{xv:.0f}", fill="black")
        draw.line([left - 4, py, left, py], fill="black")
        draw.text((8, py - 6), f"{yv:.2f}", fill="black")
    draw.text((width // 2 - 60, 10), title, fill="black")
    draw.text((width // 2 - 20, height - 20), xlabel, fill="black")
    draw.text((8, 14), ylabel, fill="black")
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    for k, (name, (xv, yv)) in enumerate(series.items()):
        colour = colours[k % len(colours)]
        points = [to_px(x, y) for x, y in zip(xv, yv, strict=True)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for px, py in points:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
        draw.line([left + 10, top + 12 + 16 * k, left + 30, top + 12 + 16 * k], fill=colour, width=3)
        draw.text((left + 36, top + 6 + 16 * k), name, fill="black")
    return image


def save_image(image: Image.Image, path: str | os.PathLike[str]) -> Path:
    """Write any Pillow image as PNG, atomically."""
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
