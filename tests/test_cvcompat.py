"""The numpy/scipy stand-ins for OpenCV against OpenCV itself (opencv-python-headless, in the dev extra)."""

from __future__ import annotations

import numpy as np
import pytest

from cmrvsr_fast.cardiac.cvcompat import gaussian_blur5, morph_close, morph_open, otsu_mask

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (dev extra) is needed to compare with OpenCV")

SHAPES = [(37, 53), (5, 5), (64, 48), (9, 130)]


@pytest.mark.parametrize("shape", SHAPES)
def test_gaussian_blur_uint8_is_bit_exact(shape) -> None:
    image = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    np.testing.assert_array_equal(gaussian_blur5(image), cv2.GaussianBlur(image, (5, 5), 0))


@pytest.mark.parametrize("shape", SHAPES)
def test_gaussian_blur_float(shape) -> None:
    image = np.random.default_rng(sum(shape)).uniform(0, 255, shape).astype(np.float32)
    np.testing.assert_allclose(gaussian_blur5(image), cv2.GaussianBlur(image, (5, 5), 0), rtol=0, atol=1e-3)


@pytest.mark.parametrize("seed", range(6))
def test_otsu_matches(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Bimodal images of different balance, plus a flat one.
    image = np.where(
        rng.random((40, 50)) < 0.2 + 0.1 * seed, rng.normal(60, 15, (40, 50)), rng.normal(170, 25, (40, 50))
    )
    image = np.clip(image, 0, 255).astype(np.uint8)
    threshold, mask = otsu_mask(image)
    cv_threshold, cv_mask = cv2.threshold(image, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    assert threshold == int(cv_threshold)
    np.testing.assert_array_equal(mask, cv_mask)


def test_otsu_constant_image() -> None:
    image = np.full((10, 10), 42, dtype=np.uint8)
    threshold, mask = otsu_mask(image)
    cv_threshold, cv_mask = cv2.threshold(image, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    assert threshold == int(cv_threshold)
    np.testing.assert_array_equal(mask, cv_mask)


@pytest.mark.parametrize("seed", range(4))
def test_morphology_matches(seed: int) -> None:
    mask = (np.random.default_rng(seed).random((33, 41)) < 0.3 + 0.15 * seed).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (5, 5))
    np.testing.assert_array_equal(morph_close(mask), cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel))
    np.testing.assert_array_equal(morph_open(mask), cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel))
