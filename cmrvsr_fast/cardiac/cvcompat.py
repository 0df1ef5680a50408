"""The few OpenCV operations the public implementation's ROI and ES heuristics use, in numpy/scipy.

OpenCV is a heavy dependency for a scanner-side package, and these four operations are small. Each reproduces
OpenCV's semantics (kernel, border rule, rounding, tie-breaking); tests compare them with cv2 where it is
installed (the `dev` extra).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# cv2.getGaussianKernel(5, sigma<=0) uses this fixed binomial table rather than sampling a Gaussian.
_GAUSS5 = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def gaussian_blur5(image: np.ndarray) -> np.ndarray:
    """cv2.GaussianBlur(image, (5, 5), 0) for a 2-D uint8 or float image (border: reflect-101).

    uint8 follows OpenCV's exact fixed-point path: the binomial kernel is exact in 1/256ths, and the result is
    rounded half up. Float images are filtered in float64 and returned as float32.
    """
    if image.ndim != 2:
        raise ValueError(f"gaussian_blur5 takes a 2-D image, got shape {image.shape}")
    if image.dtype == np.uint8:
        taps = np.array([1, 4, 6, 4, 1], dtype=np.int64)
        acc = ndimage.correlate1d(image.astype(np.int64), taps, axis=0, mode="mirror")
        acc = ndimage.correlate1d(acc, taps, axis=1, mode="mirror")
        return ((acc + 128) >> 8).astype(np.uint8)
    out = ndimage.correlate1d(image.astype(np.float64), _GAUSS5, axis=0, mode="mirror")
    out = ndimage.correlate1d(out, _GAUSS5, axis=1, mode="mirror")
    return out.astype(np.float32)


def otsu_mask(image: np.ndarray) -> tuple[int, np.ndarray]:
    """cv2.threshold(image, 0, 1, THRESH_BINARY + THRESH_OTSU) for a uint8 image -> (threshold, uint8 mask).

    The threshold maximises the between-class variance over the 256-bin histogram, the first maximum winning;
    the mask is 1 where image > threshold. A constant image has no valid split and gets threshold 0.
    """
    if image.dtype != np.uint8:
        raise TypeError(f"otsu_mask takes a uint8 image, got {image.dtype}")
    hist = np.bincount(image.ravel(), minlength=256).astype(np.float64) / image.size
    levels = np.arange(256, dtype=np.float64)
    q1 = np.cumsum(hist)
    q2 = 1.0 - q1
    mean_all = float(np.dot(levels, hist))
    eps = np.finfo(np.float32).eps
    valid = (np.minimum(q1, q2) >= eps) & (np.maximum(q1, q2) <= 1.0 - eps)
    with np.errstate(divide="ignore", invalid="ignore"):
        mu1 = np.cumsum(levels * hist) / q1
        mu2 = (mean_all - q1 * mu1) / q2
        between = q1 * q2 * (mu1 - mu2) ** 2
    between = np.where(valid, between, -np.inf)
    threshold = int(np.argmax(between)) if np.isfinite(between).any() and between.max() > 0 else 0
    return threshold, (image > threshold).astype(np.uint8)


def _rect(size: int) -> np.ndarray:
    return np.ones((size, size), dtype=bool)


def morph_close(mask: np.ndarray, size: int = 5) -> np.ndarray:
    """cv2.morphologyEx(mask, MORPH_CLOSE, 5×5 rect): dilate then erode; pixels outside the image never win."""
    dilated = ndimage.binary_dilation(mask.astype(bool), _rect(size), border_value=0)
    return ndimage.binary_erosion(dilated, _rect(size), border_value=1).astype(np.uint8)


def morph_open(mask: np.ndarray, size: int = 5) -> np.ndarray:
    """cv2.morphologyEx(mask, MORPH_OPEN, 5×5 rect): erode then dilate; pixels outside the image never win."""
    eroded = ndimage.binary_erosion(mask.astype(bool), _rect(size), border_value=1)
    return ndimage.binary_dilation(eroded, _rect(size), border_value=0).astype(np.uint8)
