"""The degradation of ACDCSR / DSB15SR (docs/model.md): k-space truncation, then OpenCV-style bicubic down-sampling."""

from __future__ import annotations

import numpy as np
from numpy.fft import fft2, fftshift, ifft2, ifftshift

BICUBIC_A = -0.75  # OpenCV's INTER_CUBIC kernel parameter


def truncate_kspace(image: np.ndarray, scale: int) -> np.ndarray:
    """Keep the central (H/r)×(W/r) block of the centred orthonormal 2-D spectrum of each (…, H, W) frame and
    return the magnitude of the full-size inverse, rounded (what a lower-resolution acquisition would see)."""
    height, width = image.shape[-2:]
    kspace = fftshift(fft2(ifftshift(image, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    keep_h, keep_w = height // scale, width // scale
    top, left = height // 2 - keep_h // 2, width // 2 - keep_w // 2
    block = np.zeros_like(kspace)
    block[..., top : top + keep_h, left : left + keep_w] = kspace[..., top : top + keep_h, left : left + keep_w]
    # The public code shifts back with fftshift (not ifftshift); the two differ only for odd sizes.
    restored = fftshift(ifft2(ifftshift(block, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    return np.around(np.abs(restored))


def _cubic_weights(source: int, target: int) -> np.ndarray:
    """(target, source) matrix of OpenCV's INTER_CUBIC resize along one axis: pixel-centre alignment, a = −0.75,
    no antialiasing, taps beyond the edge replicate the edge pixel. Offsets are computed in float32 as OpenCV does."""
    scale = source / target
    weights = np.zeros((target, source))
    a = BICUBIC_A
    for d in range(target):
        fx = np.float32((d + 0.5) * scale - 0.5)
        sx = int(np.floor(fx))
        x = np.float32(fx - sx)
        c0 = ((a * (x + 1) - 5 * a) * (x + 1) + 8 * a) * (x + 1) - 4 * a
        c1 = ((a + 2) * x - (a + 3)) * x * x + 1
        c2 = ((a + 2) * (1 - x) - (a + 3)) * (1 - x) * (1 - x) + 1
        for k, c in enumerate((c0, c1, c2, 1 - c0 - c1 - c2)):
            weights[d, min(max(sx - 1 + k, 0), source - 1)] += np.float32(c)
    return weights


def bicubic_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC) for (…, H, W) float arrays."""
    rows = _cubic_weights(image.shape[-2], height)
    cols = _cubic_weights(image.shape[-1], width)
    return rows @ np.asarray(image, dtype=np.float64) @ cols.T  # two matmuls: far faster than one 3-operand einsum


def degrade(hr: np.ndarray, scale: int) -> np.ndarray:
    """LR frames of an HR (T, H, W) cine or (H, W) frame on the 0–255 scale, exactly as docs/model.md:
    k-space truncation, magnitude, round; bicubic to (H//r, W//r), round, clip to 0–255. Returns float32."""
    if scale not in (2, 3, 4):
        raise ValueError(f"scale must be 2, 3 or 4, got {scale}")
    data = np.asarray(hr, dtype=np.float64)
    if data.ndim not in (2, 3):
        raise ValueError(f"degrade takes (T, H, W) or (H, W), got shape {data.shape}")
    height, width = data.shape[-2:]
    if height < scale or width < scale:
        raise ValueError(f"a {height}×{width} image is too small for ×{scale}")
    low = bicubic_resize(truncate_kspace(data, scale), height // scale, width // scale)
    return np.clip(np.round(low), 0, 255).astype(np.float32)
