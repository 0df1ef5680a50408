"""Image-quality metrics of the paper (docs/model.md): PSNR, SSIM, and their cardiac versions inside a heart box.

All take intensities on the 0–255 scale. The paper scores outputs after rounding and clamping to 0–255
(`to_grey_levels`); the evaluation pipeline does that before calling these.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cmrvsr_fast.cardiac.roi import Box, heart_box

SSIM_VARIANTS = ("standard", "paper")
_WINDOW, _SIGMA, _K1, _K2, _RANGE = 11, 1.5, 0.01, 0.03, 255.0


def to_grey_levels(data: np.ndarray) -> np.ndarray:
    """Round and clamp to 0–255, as the public implementation does before scoring."""
    return np.clip(np.round(np.asarray(data, dtype=np.float64)), 0, 255)


def psnr(x: np.ndarray, y: np.ndarray) -> float:
    """PSNR in dB on the 0–255 scale of (H, W) frames, or the mean over frames of (…, H, W) stacks.
    As in the public implementation, 1e-10 is added to the MSE, so identical frames score about 148 dB, not infinity."""
    x, y = _pair(x, y)
    mse = ((x - y) ** 2).reshape(-1, *x.shape[-2:]).mean(axis=(-2, -1))
    return float(np.mean(10 * np.log10(_RANGE**2 / (mse + 1e-10))))


def gaussian_window(variant: str = "standard") -> np.ndarray:
    """11×11 SSIM window, summing to 1. "standard": σ = 1.5. "paper": the public implementation's
    exp(−((x−μ)/(2σ))²), an effective σ of 1.5·√2 ≈ 2.12."""
    if variant not in SSIM_VARIANTS:
        raise ValueError(f"SSIM variant must be one of {SSIM_VARIANTS}, got {variant!r}")
    offsets = np.arange(_WINDOW) - _WINDOW // 2
    profile = (
        np.exp(-((offsets / (2 * _SIGMA)) ** 2)) if variant == "paper" else np.exp(-(offsets**2) / (2 * _SIGMA**2))
    )
    window = np.outer(profile, profile)
    return window / window.sum()


def ssim(x: np.ndarray, y: np.ndarray, variant: str = "standard") -> float:
    """SSIM of (H, W) frames (mean over frames for (…, H, W) stacks): Gaussian 11×11 window, K1 = 0.01,
    K2 = 0.03, data range 255, no padding (the mean over the valid region)."""
    x, y = _pair(x, y)
    if min(x.shape[-2:]) < _WINDOW:
        raise ValueError(f"SSIM needs frames of at least {_WINDOW}×{_WINDOW}, got {x.shape[-2:]}")
    window = gaussian_window(variant)
    c1, c2 = (_K1 * _RANGE) ** 2, (_K2 * _RANGE) ** 2
    scores = []
    for a, b in zip(x.reshape(-1, *x.shape[-2:]), y.reshape(-1, *y.shape[-2:]), strict=True):

        def blur(image: np.ndarray) -> np.ndarray:
            return _valid_correlate(image, window)

        mu_a, mu_b = blur(a), blur(b)
        var_a = blur(a * a) - mu_a**2
        var_b = blur(b * b) - mu_b**2
        cov = blur(a * b) - mu_a * mu_b
        score = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
        scores.append(score.mean())
    return float(np.mean(scores))


def cardiac_psnr(sr: np.ndarray, hr: np.ndarray, box: Box | None = None) -> float:
    """PSNR of a (T, H, W) cine inside the heart box (heart_box(hr) unless given), averaged over frames."""
    h0, h1, w0, w1 = heart_box(hr) if box is None else box
    return psnr(np.asarray(sr)[..., h0:h1, w0:w1], np.asarray(hr)[..., h0:h1, w0:w1])


def cardiac_ssim(sr: np.ndarray, hr: np.ndarray, box: Box | None = None, variant: str = "standard") -> float:
    """SSIM of a (T, H, W) cine inside the heart box (heart_box(hr) unless given), averaged over frames.
    A box smaller than the 11×11 window (tiny images) is widened around its centre to fit it."""
    box = heart_box(hr) if box is None else box
    h0, h1, w0, w1 = _at_least_window(box, np.shape(hr)[-2:])
    return ssim(np.asarray(sr)[..., h0:h1, w0:w1], np.asarray(hr)[..., h0:h1, w0:w1], variant)


def _at_least_window(box: Box, shape: tuple[int, ...]) -> Box:
    def widen(lo: int, hi: int, size: int) -> tuple[int, int]:
        if hi - lo >= _WINDOW or size < _WINDOW:
            return lo, hi
        lo = min(max(0, (lo + hi) // 2 - _WINDOW // 2), size - _WINDOW)
        return lo, lo + _WINDOW

    (h0, h1), (w0, w1) = widen(box[0], box[1], shape[0]), widen(box[2], box[3], shape[1])
    return h0, h1, w0, w1


def _valid_correlate(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Correlation with a separable window (an outer product), kept where the window lies inside the image."""
    half = window.shape[0] // 2
    profile = window.sum(axis=1)  # the window is outer(profile, profile) with profile summing to 1
    full = ndimage.correlate1d(
        ndimage.correlate1d(image, profile, axis=0, mode="constant"), profile, axis=1, mode="constant"
    )
    return full[half : image.shape[0] - half, half : image.shape[1] - half]


def _pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {x.shape} vs {y.shape}")
    if x.ndim < 2 or min(x.shape[-2:]) < 1:
        raise ValueError(f"expected (…, H, W) frames, got shape {x.shape}")
    return x, y
