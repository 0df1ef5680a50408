"""Agreement between a super-resolved cine and the low-resolution input it came from.

The training data's degradation (data.degrade) is linear up to its magnitude and rounding steps, and separable:
per axis, keep the central 1/r of the spectrum, then OpenCV-bicubic down-sampling. As a matrix per axis,
A = C · Re(F⁻¹ P F) (n × N), and one frame degrades as A_rows · X · A_colsᵀ.

- `reproduction_psnr`: how well an HR cine, degraded again, reproduces the LR input (dB on 0–255 grey levels).
  A super-resolved cine that reproduces its input worse than plain bicubic does has changed what was acquired:
  the per-series QA figure of `upscale`.
- `enforce_consistency`: the smallest change (least squares) to an HR cine that makes its degraded version equal
  the input: X + A_rows⁺ (Y − A_rows X A_colsᵀ) A_cols⁺ᵀ, with ⁺ the pseudo-inverse. The spectrum's acquired
  block then comes from the input, the rest from the network. A strength s < 1 takes that fraction of the step:
  the input and the network's estimate of the acquired band are averaged. The full step maximises CardiacPSNR
  but lowers whole-frame SSIM: it imports the input's rounding and the error of the linear model, which leaves
  out the magnitude step (under a grey level on average, but tens of levels where the truncated image rings
  below zero at dark edges). `DEFAULT_STRENGTH` raised every metric at ×2 and ×4 on held-out synthetic cines
  (docs/quality.md).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from cmrvsr_fast.cardiac.intensity import intensity_window, to_window
from cmrvsr_fast.data.degrade import _cubic_weights, bicubic_resize

DEFAULT_STRENGTH = 0.5
_PINV_RCOND = 1e-3  # the half-weighted Nyquist line makes A nearly rank-deficient; do not amplify it


@lru_cache(maxsize=32)
def degradation_matrix(size: int, scale: int) -> np.ndarray:
    """(size // scale, size) matrix of the degradation along one axis: centred k-space truncation to
    size // scale lines (real part: the magnitude of a real image's truncation, to first order), then OpenCV
    bicubic down-sampling."""
    keep = size // scale
    centre = size // 2
    mask = np.zeros(size)
    mask[centre - keep // 2 : centre - keep // 2 + keep] = 1.0
    identity = np.eye(size)
    spectrum = np.fft.fftshift(np.fft.fft(np.fft.ifftshift(identity, axes=0), axis=0, norm="ortho"), axes=0)
    truncated = np.fft.fftshift(
        np.fft.ifft(np.fft.ifftshift(spectrum * mask[:, None], axes=0), axis=0, norm="ortho"), axes=0
    )
    return _cubic_weights(size, keep) @ truncated.real


@lru_cache(maxsize=32)
def _correction_matrix(size: int, scale: int) -> np.ndarray:
    return np.linalg.pinv(degradation_matrix(size, scale), rcond=_PINV_RCOND)


def degrade_linear(hr: np.ndarray, scale: int) -> np.ndarray:
    """(…, H, W) -> (…, H/r, W/r): the degradation without magnitude, rounding or clipping (float64)."""
    rows = degradation_matrix(hr.shape[-2], scale)
    cols = degradation_matrix(hr.shape[-1], scale)
    return rows @ np.asarray(hr, dtype=np.float64) @ cols.T


def _check_shapes(hr: np.ndarray, lr: np.ndarray, scale: int) -> None:
    if hr.shape[:-2] != lr.shape[:-2] or hr.shape[-2:] != (lr.shape[-2] * scale, lr.shape[-1] * scale):
        raise ValueError(f"an HR cine of shape {hr.shape} is not a ×{scale} of an input of shape {lr.shape}")


def reproduction_psnr(hr: np.ndarray, lr: np.ndarray, scale: int) -> float:
    """PSNR (dB, 0–255 grey levels) of the HR cine degraded again against the LR input."""
    _check_shapes(hr, lr, scale)
    error = degrade_linear(hr, scale) - np.asarray(lr, dtype=np.float64)
    mse = float(np.mean(error**2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def enforce_consistency(hr: np.ndarray, lr: np.ndarray, scale: int, strength: float = 1.0) -> np.ndarray:
    """The least-squares projection of an (…, rH, rW) HR cine onto the cines whose degradation is the
    (…, H, W) input (strength 1), or that fraction of the way there. Returns float64."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"consistency strength must lie in [0, 1], got {strength}")
    _check_shapes(hr, lr, scale)
    hr = np.asarray(hr, dtype=np.float64)
    residual = np.asarray(lr, dtype=np.float64) - degrade_linear(hr, scale)
    rows = _correction_matrix(hr.shape[-2], scale)
    cols = _correction_matrix(hr.shape[-1], scale)
    return hr + strength * (rows @ residual @ cols.T)


def input_agreement(sr: np.ndarray, cine: np.ndarray, scale: int) -> dict[str, float]:
    """The per-series QA figure: how well the super-resolved cine (…, T, rH, rW), degraded again, reproduces
    the input cine (…, T, H, W), beside the same figure for bicubic interpolation of the input; both in dB on
    the input's own 0–255 window (`intensity_window`, as the network sees it)."""
    low, high = intensity_window(np.asarray(cine))
    high = max(high, low + 1e-12)  # a constant cine: any window will do
    lr = to_window(cine, low, high)
    bicubic = bicubic_resize(lr, lr.shape[-2] * scale, lr.shape[-1] * scale)
    return {
        "super_resolved_db": round(reproduction_psnr(to_window(sr, low, high), lr, scale), 2),
        "bicubic_db": round(reproduction_psnr(bicubic, lr, scale), 2),
    }
