"""Agreement with the input: the linear degradation model, the consistency step and the QA figure."""

from __future__ import annotations

import numpy as np
import pytest

from cmrvsr_fast.data.degrade import bicubic_resize, degrade
from cmrvsr_fast.data.synth import synth_case
from cmrvsr_fast.inference.consistency import (
    degrade_linear,
    enforce_consistency,
    input_agreement,
    reproduction_psnr,
)


@pytest.fixture(scope="module")
def cine() -> np.ndarray:
    """A held-out synthetic cine on 0–255 (8 frames, cropped to 120 × 108: not square, a multiple of 12)."""
    return synth_case(1_000_003, display=144, frames=8).cine[:, :120, :108].astype(np.float64)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_linear_model_matches_the_degradation_up_to_its_rounding(cine, scale):
    """The matrices reproduce data.degrade but for its two roundings and the magnitude step: under a grey level on
    average (locally more, where the truncated image rings below zero and the magnitude folds it back), a fifth
    of the error of a model that leaves the k-space truncation out."""
    lr = degrade(cine, scale)
    error = np.abs(degrade_linear(cine, scale) - lr).mean()
    without_truncation = np.abs(bicubic_resize(cine, *lr.shape[-2:]) - lr).mean()
    assert error < 1.0 and error < without_truncation / 5


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_full_consistency_reproduces_the_input_and_changes_no_more_than_needed(cine, scale):
    lr = degrade(cine, scale)
    guess = bicubic_resize(lr, *cine.shape[-2:])
    projected = enforce_consistency(guess, lr, scale)
    assert np.abs(degrade_linear(projected, scale) - lr).max() < 1e-6
    assert np.allclose(enforce_consistency(projected, lr, scale), projected, atol=1e-6)  # a projection
    # least squares: the truth also agrees (to its rounding) yet lies farther from the guess than the projection
    assert np.linalg.norm(projected - guess) < np.linalg.norm(cine - guess)
    half = enforce_consistency(guess, lr, scale, strength=0.5)
    assert np.allclose(half, (guess + projected) / 2)
    assert np.array_equal(enforce_consistency(guess, lr, scale, strength=0.0), guess)


def test_consistency_refuses_bad_strength_and_shapes(cine):
    lr = degrade(cine, 4)
    with pytest.raises(ValueError, match="strength"):
        enforce_consistency(cine, lr, 4, strength=1.5)
    with pytest.raises(ValueError, match="not a ×2"):
        enforce_consistency(cine, lr, 2)


@pytest.mark.parametrize("scale", [2, 4])
def test_qa_figure_ranks_the_truth_above_bicubic_and_noise_below(cine, scale):
    """The QA figure's premise: the true HR cine reproduces its input better than bicubic interpolation does,
    and an output that changed the anatomy (here: noise added) reproduces it worse."""
    lr = degrade(cine, scale)
    truth = input_agreement(cine, lr, scale)
    assert truth["super_resolved_db"] > truth["bicubic_db"] + 3
    noisy = cine + np.random.default_rng(0).normal(0, 25, cine.shape)
    assert input_agreement(noisy, lr, scale)["super_resolved_db"] < truth["bicubic_db"]
    assert reproduction_psnr(cine, lr, scale) == pytest.approx(truth["super_resolved_db"], abs=0.01)
