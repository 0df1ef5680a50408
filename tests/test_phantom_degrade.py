"""The phantom (determinism, anatomy, cardiac cycle, speed) and the degradation of docs/model.md."""

from __future__ import annotations

import time

import numpy as np
import pytest

from cmrvsr_fast.cardiac.phase import estimate_es
from cmrvsr_fast.cardiac.roi import heart_box
from cmrvsr_fast.data import crop_to_multiple, degrade, denormalise, generate, normalise
from cmrvsr_fast.data.phantom import volume_curve

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (dev extra) restates the authors' resize")


def test_phantom_is_deterministic_and_well_formed() -> None:
    a, b, c = generate(5, (64, 80), 12, 2), generate(5, (64, 80), 12, 2), generate(6, (64, 80), 12, 2)
    assert a.cine.shape == (2, 12, 64, 80) and a.cine.dtype == np.float32
    assert np.array_equal(a.cine, b.cine) and a.es == b.es and a.heart_box == b.heart_box
    assert not np.array_equal(a.cine, c.cine)
    assert a.cine.min() >= 0 and a.cine.max() <= 255 and np.array_equal(a.cine, np.round(a.cine))
    assert a.ed == 0 and 0.3 * 12 <= a.es <= 0.4 * 12


@pytest.mark.parametrize("frames", [8, 9, 23, 30, 40])
def test_volume_curve_has_ed_at_zero_and_es_at_its_minimum(frames: int) -> None:
    es = round(0.35 * frames)
    curve = volume_curve(frames, es)
    assert curve[0] == pytest.approx(1.0) and int(np.argmin(curve)) == es and curve[es] == pytest.approx(0.0)
    assert np.all(np.diff(curve[: es + 1]) < 0)  # ejection
    assert np.all(np.diff(curve[es:]) > 0)  # filling, diastasis, atrial kick


def test_blood_pool_is_bright_and_shrinks_to_es() -> None:
    p = generate(11, (128, 128), 30)
    h0, h1, w0, w1 = p.heart_box
    heart = p.cine[0, :, h0:h1, w0:w1]
    bright = (heart > 160).sum(axis=(1, 2))  # blood pixels (LV + RV) per frame
    assert int(np.argmin(bright)) in range(p.es - 1, p.es + 2)
    assert bright[0] > 1.3 * bright[p.es]
    # The myocardium (dark ring) thickens: fewer blood pixels but the heart outline changes less.
    assert p.cine[0, 0].mean() > 40  # a body fills the field of view, not a black frame


def test_slices_go_from_base_to_apex() -> None:
    p = generate(2, (128, 128), 16, 5)
    h0, h1, w0, w1 = p.heart_box
    blood = (p.cine[:, 0, h0:h1, w0:w1] > 160).sum(axis=(1, 2))
    assert blood[0] > blood[-1] * 2  # the LV cavity (and RV) shrink towards the apex


def box_iou(a, b) -> float:
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[2], b[2]))
    area = lambda x: (x[1] - x[0]) * (x[3] - x[2])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.mark.parametrize("seed", range(6))
def test_heart_box_and_es_estimation_on_phantoms(seed: int) -> None:
    frames = [8, 14, 20, 25, 30, 40][seed]
    p = generate(100 + seed, (160, 144), frames, 2)
    for method in ("public", "harmonic"):
        estimate = heart_box(p.cine, method)
        assert box_iou(estimate, p.heart_box) > 0.5, (method, estimate, p.heart_box)
    assert abs(estimate_es(p.cine) - p.es) <= 2


def test_phantom_speed() -> None:
    start = time.perf_counter()
    generate(0, (256, 256), 30, 2)
    assert (time.perf_counter() - start) / 2 < 1.0  # seconds per 30-frame 256×256 slice


def test_phantom_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="frames"):
        generate(0, (64, 64), 5)
    with pytest.raises(ValueError, match="size"):
        generate(0, (16, 64), 10)


# ---- docs/model.md restated: the authors' preprocessing steps written out with numpy and OpenCV ---------------


def spec_degrade(frame: np.ndarray, r: int) -> np.ndarray:
    h, w = frame.shape
    k = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(frame), norm="ortho"))
    mask = np.zeros_like(k)
    kx, lx, ky, ly = h // 2, h // r, w // 2, w // r
    mask[kx - lx // 2 : kx + lx - lx // 2, ky - ly // 2 : ky + ly - ly // 2] = 1
    img = np.around(np.abs(np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(k * mask), norm="ortho"))))
    low = cv2.resize(img, (w // r, h // r), interpolation=cv2.INTER_CUBIC)
    return np.clip(low.round(), 0, 255)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_degradation_matches_the_restated_spec(scale: int) -> None:
    hr = crop_to_multiple(generate(scale, (100, 90), 8).cine[0])
    assert hr.shape == (8, 96, 84)
    ours = degrade(hr, scale)
    assert ours.shape == (8, 96 // scale, 84 // scale)
    theirs = np.stack([spec_degrade(f.astype(np.float32), scale) for f in hr])
    assert np.abs(ours - theirs).max() <= 1.0  # within one grey level (float rounding at .5 ties)
    assert np.mean(ours == theirs) > 0.999
    np.testing.assert_array_equal(degrade(hr[3], scale), ours[3])  # a single frame


def test_degradation_on_random_and_odd_sizes() -> None:
    frame = np.random.default_rng(0).uniform(0, 255, (37, 53))
    assert np.abs(degrade(frame, 4) - spec_degrade(frame, 4)).max() <= 1.0
    with pytest.raises(ValueError, match="scale"):
        degrade(frame, 5)


def test_crop_and_normalisation() -> None:
    data = np.arange(2 * 27 * 40, dtype=np.float32).reshape(2, 27, 40)
    cropped = crop_to_multiple(data)
    assert cropped.shape == (2, 24, 36)
    assert cropped[0, 0, 0] == data[0, 1, 2]  # (27 % 12) // 2 = 1 row and (40 % 12) // 2 = 2 columns before
    np.testing.assert_allclose(denormalise(normalise(data, 54.089, 48.084), 54.089, 48.084), data, atol=1e-3)
