"""Phase code properties, ES estimation and the heart box, including the degenerate inputs that must not raise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cmrvsr_fast import estimate_es, heart_box, phase_code
from cmrvsr_fast.cardiac.phase import es_search_range, fallback_es


def cases():
    for frames in (2, 3, 7, 12, 25, 30, 35):
        for ed in sorted({0, 1, frames // 2, frames - 1}):
            for es in sorted({(ed + 1) % frames, (ed + frames // 3) % frames, (ed - 1) % frames}):
                if es != ed:
                    yield frames, ed, es


@pytest.mark.parametrize(("frames", "ed", "es"), list(cases()))
def test_public_phase_code_properties(frames: int, ed: int, es: int) -> None:
    code = phase_code(frames, ed, es)
    assert code.shape == (frames,)
    assert code[ed] == pytest.approx(1.0) and code[es] == pytest.approx(-1.0)
    assert np.all(np.abs(code) <= 1.0 + 1e-12)
    # Walking the cycle from ED: strictly decreasing through systole to ES, strictly increasing through diastole.
    walk = code[(ed + np.arange(frames + 1)) % frames]
    systole = (es - ed) % frames
    assert np.all(np.diff(walk[: systole + 1]) < 0)
    assert np.all(np.diff(walk[systole:frames]) > 0)


@pytest.mark.parametrize(("frames", "ed", "es"), list(cases()))
def test_public_phase_code_closed_form(frames: int, ed: int, es: int) -> None:
    systole = (es - ed) % frames
    expected = np.empty(frames)
    for d in range(frames):
        expected[(ed + d) % frames] = (
            math.cos(math.pi * d / systole)
            if d < systole
            else math.cos(math.pi * (1 + (d - systole) / (frames - systole)))
        )
    np.testing.assert_allclose(phase_code(frames, ed, es), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("frames", "ed", "es"), [c for c in cases() if c[1] < c[2]])
def test_paper_equation_equals_public_variant_without_wrap(frames: int, ed: int, es: int) -> None:
    np.testing.assert_allclose(phase_code(frames, ed, es, "paper"), phase_code(frames, ed, es, "public"), atol=1e-12)


def test_paper_equation_differs_when_the_cycle_wraps() -> None:
    literal = phase_code(10, 7, 2, "paper")
    # Eq. 1 read literally: no frame satisfies ED < t <= ES, so every frame takes the diastolic branch.
    t = np.arange(10)
    np.testing.assert_allclose(literal, np.cos(np.pi * (1 + ((t - 2) % 10) / 15)), atol=1e-12)
    assert not np.allclose(literal, phase_code(10, 7, 2, "public"))


def test_phase_code_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="same frame"):
        phase_code(10, 3, 3)
    with pytest.raises(ValueError, match="outside"):
        phase_code(10, 0, 10)
    with pytest.raises(ValueError, match="variant"):
        phase_code(10, 0, 3, "cosine")
    assert phase_code(1, 0, 0).tolist() == [1.0]


def beating_disc(frames: int, es: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """A bright disc (blood pool) on a darker ring (myocardium) in a noisy background, smallest at frame `es`."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size * 0.45, xx - size * 0.55)
    cine = np.empty((frames, size, size))
    for t in range(frames):
        # Radius falls linearly to ES, then recovers to the next ED.
        progress = t / es if t <= es else 1 - (t - es) / (frames - es)
        radius = 12 - 6 * progress
        image = np.where(r < radius, 200.0, np.where(r < radius + 5, 80.0, 30.0))
        cine[t] = np.clip(image + rng.normal(0, 4, image.shape), 0, 255)
    return cine


@pytest.mark.parametrize(("frames", "es"), [(20, 7), (30, 10), (25, 13)])
def test_estimate_es_finds_the_smallest_blood_pool(frames: int, es: int) -> None:
    assert estimate_es(beating_disc(frames, es)) == es


def test_estimate_es_respects_ed_and_stacks() -> None:
    cine = np.roll(beating_disc(20, 7), 5, axis=0)  # ED now at frame 5, ES at frame 12
    assert estimate_es(cine, ed=5) == 12
    assert estimate_es(np.stack([cine, cine[:, ::-1]]), ed=5) == 12  # a stack: its first slice decides


def test_estimate_es_works_in_scanner_units() -> None:
    cine = beating_disc(20, 7) * 9.0 + 100.0  # e.g. 12-bit magnitude units
    assert estimate_es(cine.astype(np.int16)) == 7


@pytest.mark.parametrize(
    "cine",
    [
        np.full((20, 32, 32), 90.0),  # constant
        np.repeat(beating_disc(1, 1)[:1], 20, axis=0),  # static anatomy
        np.zeros((12, 1, 40)),  # a one-pixel-high image
    ],
    ids=["constant", "static", "degenerate-crop"],
)
def test_estimate_es_falls_back_on_degenerate_cines(cine: np.ndarray) -> None:
    assert estimate_es(cine) == fallback_es(cine.shape[0])


@pytest.mark.parametrize("frames", [1, 2, 3, 4, 5, 40])
def test_estimate_es_never_raises_and_never_returns_ed(frames: int) -> None:
    noise = np.random.default_rng(frames).uniform(0, 255, (frames, 24, 24))
    es = estimate_es(noise)
    assert 0 <= es < frames
    assert es != 0 or frames == 1
    if frames > 1:
        assert es in es_search_range(frames) or es == fallback_es(frames)


def test_estimate_es_refuses_non_cines() -> None:
    with pytest.raises(ValueError, match="expected a"):
        estimate_es(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="ED frame"):
        estimate_es(np.zeros((8, 8, 8)), ed=9)
    with pytest.raises(ValueError, match="NaN"):
        estimate_es(np.full((8, 8, 8), np.nan))


def test_heart_box_surrounds_the_moving_heart() -> None:
    cine = beating_disc(20, 7)
    h0, h1, w0, w1 = heart_box(cine)
    assert 0 <= h0 < h1 <= 64 and 0 <= w0 < w1 <= 64
    assert h0 < 64 * 0.45 < h1 and w0 < 64 * 0.55 < w1  # the disc centre is inside
    assert (h1 - h0) * (w1 - w0) < 0.8 * 64 * 64  # and the box is not the whole image


def test_heart_box_falls_back_to_the_whole_image() -> None:
    assert heart_box(np.full((10, 16, 20), 7.0)) == (0, 16, 0, 20)
    assert heart_box(np.zeros((1, 16, 20))) == (0, 16, 0, 20)
