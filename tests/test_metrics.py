"""Metrics against independent implementations (scikit-image; the public formula restated with torch)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cmrvsr_fast.cardiac.roi import heart_box
from cmrvsr_fast.data import generate
from cmrvsr_fast.evaluation.metrics import cardiac_psnr, cardiac_ssim, gaussian_window, psnr, ssim, to_grey_levels

skimage_metrics = pytest.importorskip("skimage.metrics", reason="scikit-image (dev extra) is the reference SSIM")


def pair(seed: int, shape=(40, 52), noise=12.0):
    rng = np.random.default_rng(seed)
    y = np.clip(np.round(rng.uniform(0, 255, shape)), 0, 255)
    x = to_grey_levels(y + rng.normal(0, noise, shape))
    return x, y


@pytest.mark.parametrize("seed", range(3))
def test_psnr_matches_scikit_image(seed: int) -> None:
    x, y = pair(seed)
    assert psnr(x, y) == pytest.approx(skimage_metrics.peak_signal_noise_ratio(y, x, data_range=255), abs=1e-9)


def test_psnr_of_a_cine_is_the_mean_over_frames() -> None:
    frames = [pair(s) for s in range(4)]
    x, y = np.stack([f[0] for f in frames]), np.stack([f[1] for f in frames])
    assert psnr(x, y) == pytest.approx(np.mean([psnr(a, b) for a, b in frames]))
    assert psnr(y, y) == pytest.approx(10 * math.log10(255**2 / 1e-10))


@pytest.mark.parametrize("seed", range(3))
def test_standard_ssim_matches_scikit_image(seed: int) -> None:
    x, y = pair(seed, noise=20.0)
    expected = skimage_metrics.structural_similarity(
        y, x, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert ssim(x, y) == pytest.approx(expected, abs=1e-6)


def torch_public_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """The public implementation's SSIM formula, restated with torch (kernel exp(−((x−μ)/(2σ))²), valid conv)."""
    grid = torch.arange(11, dtype=torch.float64)
    g = torch.exp(-(((grid - 5) / (2 * 1.5)) ** 2))
    kernel = torch.outer(g, g)
    kernel = (kernel / kernel.sum()).view(1, 1, 11, 11)
    a, b = (torch.as_tensor(v, dtype=torch.float64).view(1, 1, *v.shape) for v in (x, y))
    mu1, mu2 = F.conv2d(a, kernel), F.conv2d(b, kernel)
    s1 = F.conv2d(a * a, kernel) - mu1**2
    s2 = F.conv2d(b * b, kernel) - mu2**2
    s12 = F.conv2d(a * b, kernel) - mu1 * mu2
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    return float((((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s1 + s2 + c2))).mean())


@pytest.mark.parametrize("seed", range(3))
def test_paper_ssim_matches_the_public_formula(seed: int) -> None:
    x, y = pair(seed, noise=20.0)
    assert ssim(x, y, "paper") == pytest.approx(torch_public_ssim(x, y), abs=1e-9)
    assert ssim(x, y, "paper") != pytest.approx(ssim(x, y), abs=1e-4)


def test_paper_window_has_the_wider_effective_sigma() -> None:
    offsets = np.arange(11) - 5
    marginal = gaussian_window("paper").sum(axis=0)
    assert np.sqrt((marginal * offsets**2).sum()) == pytest.approx(1.5 * np.sqrt(2), rel=0.05)


def test_ssim_refuses_small_frames_and_bad_variants() -> None:
    with pytest.raises(ValueError, match="11×11"):
        ssim(np.zeros((10, 30)), np.zeros((10, 30)))
    with pytest.raises(ValueError, match="variant"):
        ssim(np.zeros((20, 20)), np.zeros((20, 20)), "ms")
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(np.zeros((20, 20)), np.zeros((20, 21)))


def test_cardiac_metrics_score_only_inside_the_box() -> None:
    hr = generate(3, (96, 96), 16).cine[0]
    box = (30, 70, 25, 75)
    sr = hr.copy()
    sr[:, :20] = 0  # damage outside the box only
    assert cardiac_psnr(sr, hr, box) == pytest.approx(psnr(hr, hr))
    assert cardiac_ssim(sr, hr, box) == pytest.approx(1.0)
    sr[:, 40:50, 40:50] += 30  # and inside
    assert cardiac_psnr(sr, hr, box) < 40 and cardiac_ssim(sr, hr, box) < 1.0
    h0, h1, w0, w1 = heart_box(hr)  # the default box is the public method's on the HR cine
    assert cardiac_psnr(sr, hr) == pytest.approx(psnr(sr[:, h0:h1, w0:w1], hr[:, h0:h1, w0:w1]))


def test_cardiac_ssim_widens_a_box_smaller_than_the_window() -> None:
    hr = generate(3, (48, 48), 8).cine[0]
    sr = np.clip(hr + 5, 0, 255)
    assert cardiac_ssim(sr, hr, (20, 26, 40, 48)) == pytest.approx(ssim(sr[:, 18:29, 37:48], hr[:, 18:29, 37:48]))
