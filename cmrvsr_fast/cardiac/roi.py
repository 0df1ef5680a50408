"""The heart bounding box by the public implementation's method (docs/model.md, "Metrics"), with a safe fallback."""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from cmrvsr_fast.cardiac.cvcompat import gaussian_blur5, morph_close, morph_open, otsu_mask
from cmrvsr_fast.cardiac.intensity import to_display_range

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # (h0, h1, w0, w1), half-open, in pixels


def heart_box(cine: np.ndarray, method: str = "public") -> Box:
    """Heart box of a (T, H, W) cine (or the first slice of an (S, T, H, W) stack) -> (h0, h1, w0, w1).

    method="public" (the default, as the paper's CardiacPSNR/SSIM) or "harmonic" (first_harmonic_box).

    The public method: |blur5(frame 0) − blur5(frame T//2)| truncated to uint8 → Otsu → 5×5 close → 5×5 open;
    the foreground coordinates in row-major order, their first and last 5 % dropped (each axis separately, as
    the public code does: for columns this is not a percentile trim); a box of 5·std around their mean,
    clipped to the image. Intensities are brought to the 0–255 scale first when they lie outside it.
    When the motion mask is empty or the box degenerates (single frame, static cine), the whole image is
    returned and the reason logged: a valid cine never raises.
    """
    if method not in ("public", "harmonic"):
        raise ValueError(f"heart_box method must be 'public' or 'harmonic', got {method!r}")
    if method == "harmonic":
        return first_harmonic_box(cine)
    frames = first_slice(cine)
    height, width = frames.shape[1:]
    full = (0, height, 0, width)
    if frames.shape[0] < 2:
        log.info("heart_box: a single frame has no motion; using the whole image")
        return full
    frames = to_display_range(frames)
    diff = np.abs(gaussian_blur5(frames[0]) - gaussian_blur5(frames[frames.shape[0] // 2]))
    _, mask = otsu_mask(diff.astype(np.uint8))
    mask = morph_open(morph_close(mask))
    rows, cols = np.nonzero(mask)
    rows = rows[int(len(rows) * 0.05) : int(len(rows) * 0.95)]
    cols = cols[int(len(cols) * 0.05) : int(len(cols) * 0.95)]
    if len(rows) == 0 or len(cols) == 0:
        log.info("heart_box: no moving foreground found; using the whole image")
        return full
    box_h, box_w = int(np.round(np.std(rows)) * 5), int(np.round(np.std(cols)) * 5)
    centre_h, centre_w = int(np.round(np.mean(rows))), int(np.round(np.mean(cols)))
    h0, h1 = max(0, centre_h - box_h // 2), min(centre_h + (box_h - box_h // 2), height)
    w0, w1 = max(0, centre_w - box_w // 2), min(centre_w + (box_w - box_w // 2), width)
    if h1 - h0 < 2 or w1 - w0 < 2:
        log.info("heart_box: the moving region is too small for a box; using the whole image")
        return full
    return h0, h1, w0, w1


def first_harmonic_box(cine: np.ndarray, spread: float = 5.0) -> Box:
    """Heart box from the first temporal harmonic (Lin et al. 2006): the heart is what moves at the heart rate.

    |FFT_t(cine)[1]| per pixel, smoothed (σ = 2 px), kept above half its maximum; the largest connected region
    gives the centre and a box of `spread`·std of its pixel coordinates (weighted by the harmonic), as the
    public method sizes its box. Falls back to the whole image when nothing moves. Uses every frame, so it is
    robust to a cine whose frame T//2 happens to resemble frame 0.
    """
    frames = to_display_range(first_slice(cine))
    height, width = frames.shape[1:]
    full = (0, height, 0, width)
    if frames.shape[0] < 3:
        return full
    harmonic = ndimage.gaussian_filter(np.abs(np.fft.fft(frames, axis=0)[1]), 2.0)
    if harmonic.max() <= 1e-9:
        log.info("first_harmonic_box: nothing moves; using the whole image")
        return full
    labels, count = ndimage.label(harmonic > 0.5 * harmonic.max())
    largest = 1 + int(np.argmax(ndimage.sum(np.ones_like(harmonic), labels, index=range(1, count + 1))))
    rows, cols = np.nonzero(labels == largest)
    weights = harmonic[rows, cols]
    centre_h, centre_w = np.average(rows, weights=weights), np.average(cols, weights=weights)
    std_h = np.sqrt(np.average((rows - centre_h) ** 2, weights=weights))
    std_w = np.sqrt(np.average((cols - centre_w) ** 2, weights=weights))
    half_h, half_w = max(spread * std_h / 2, 4.0), max(spread * std_w / 2, 4.0)
    h0, h1 = max(0, int(np.floor(centre_h - half_h))), min(height, int(np.ceil(centre_h + half_h)) + 1)
    w0, w1 = max(0, int(np.floor(centre_w - half_w))), min(width, int(np.ceil(centre_w + half_w)) + 1)
    return h0, h1, w0, w1


def first_slice(cine: np.ndarray) -> np.ndarray:
    """The (T, H, W) cine itself, or the first slice of an (S, T, H, W) stack (the public methods use slice 1)."""
    data = np.asarray(cine)
    if data.ndim == 4:
        data = data[0]
    if data.ndim != 3 or min(data.shape) < 1:
        raise ValueError(f"expected a (T, H, W) cine or an (S, T, H, W) stack, got shape {data.shape}")
    return data
