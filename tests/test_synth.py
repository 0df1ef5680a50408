"""The acquisition-faithful synthetic data: acquisition model, scenes, and the spectrum they end up with."""

from __future__ import annotations

import numpy as np
import pytest

from cmrvsr_fast.data.acquisition import Acquisition, acquire, radial_power_spectrum, sampling_window
from cmrvsr_fast.data.datasets import reorient
from cmrvsr_fast.data.phantom import generate
from cmrvsr_fast.data.scenes import SCENE_KINDS
from cmrvsr_fast.data.synth import synth_case, synth_records


def test_sampling_window_counts_the_acquired_lines() -> None:
    window = sampling_window((96, 120), Acquisition(readout_fraction=0.75, phase_fraction=0.5, phase_axis=1))
    rows, cols = np.nonzero(window)
    assert len(np.unique(rows)) == 72 and len(np.unique(cols)) == 60
    assert window[48, 60] == 1.0  # DC is always measured
    partial = sampling_window((96, 120), Acquisition(phase_fraction=0.5, phase_axis=1, partial_fourier=0.625))
    assert len(np.unique(np.nonzero(partial)[1])) == int(np.ceil(0.625 * 60))
    assert partial[48, :60].any() and not partial[48, 90:].any()  # one side of the phase-encode axis is missing
    hamming = sampling_window((64, 64), Acquisition(kspace_filter="hamming"))
    assert hamming[32, 32] == pytest.approx(1.0) and hamming[32, 1] < 0.1
    with pytest.raises(ValueError, match="partial_fourier"):
        Acquisition(partial_fourier=0.3)


def test_full_noiseless_acquisition_of_a_smooth_scene_is_the_scene_at_display_size() -> None:
    fine = np.mgrid[:64, :64][1].astype(float)
    scene = 100 + 50 * np.cos(2 * np.pi * fine / 64)[None]  # one cycle across the field of view
    out = acquire(scene, (32, 32), Acquisition(snr=1e9), np.random.default_rng(0))
    # Cropping the centred spectrum keeps the sample at the centre (fine 32, coarse 16) in place: coarse i is fine 2i.
    expected = 100 + 50 * np.cos(2 * np.pi * 2 * np.arange(32) / 64)
    np.testing.assert_allclose(out[0, 5], expected, atol=0.5)


def test_cases_are_deterministic_and_valid_for_every_kind() -> None:
    for kind in SCENE_KINDS:
        case = synth_case(7, display=48, frames=10, kind=kind)
        assert case.cine.shape == (10, 48, 48) and case.cine.dtype == np.float32
        assert case.cine.min() == 0 and case.cine.max() == 255 and np.all(case.cine == np.round(case.cine))
        assert 0 < case.es < 10 and case.kind == kind
        # The scene moves: the frames are not all the same.
        assert np.abs(case.cine[case.es] - case.cine[0]).mean() > 0.2
        np.testing.assert_array_equal(case.cine, synth_case(7, display=48, frames=10, kind=kind).cine)
    assert not np.array_equal(synth_case(1, 48, 10).cine, synth_case(2, 48, 10).cine)
    records = synth_records(range(3, 5), display=48, frames=10)
    assert [r.name for r in records] == ["synth0000003", "synth0000004"] and records[0].cine.shape == (1, 10, 48, 48)
    with pytest.raises(ValueError, match="multiple of 12"):
        synth_case(0, display=50)


def _band_drop(frames: np.ndarray, acquired: float, measured_up_to: float) -> float:
    """Power just inside the acquired band / power beyond what any line measured (both rings of |k|)."""
    centres, power = radial_power_spectrum(frames, bins=40)
    inside = power[(centres > 0.6 * acquired) & (centres < 0.85 * acquired)].mean()
    beyond = power[centres > min(1.1 * measured_up_to, 0.92)].mean()
    return inside / beyond


def test_spectrum_falls_where_the_acquisition_ends_across_the_randomised_range() -> None:
    """Like clinical cines (acquired at part of the display matrix and zero-filled), a case's spectrum drops by
    well over a decade past its acquired band, to a noise floor; the old phantom, drawn on the display grid, only
    falls as natural images do (11–41× over the same rings), so the check discriminates."""
    phantom = generate(3, (96, 96), 8).cine[0]
    checked = 0
    for seed in range(40):
        protocol = synth_case(seed, display=96, frames=8).acquisition
        highest = max(protocol.readout_fraction, protocol.phase_fraction)
        if highest > 0.8:
            continue  # the drop lies too near the edge of the display band to measure here
        checked += 1
        lowest = min(protocol.readout_fraction, protocol.phase_fraction)
        # Along a diagonal both axes count: beyond the larger fraction (and the rms of both) nothing was measured.
        measured = max(highest, np.hypot(protocol.readout_fraction, protocol.phase_fraction) / np.sqrt(2))
        assert _band_drop(synth_case(seed, display=96, frames=8).cine, lowest, measured) > 45, seed
        assert _band_drop(phantom, lowest, measured) < 45, seed
    assert checked >= 8


def test_reorient_covers_the_eight_symmetries_alike_for_lr_and_hr() -> None:
    lr = np.arange(12.0).reshape(1, 3, 4)
    hr = np.kron(lr, np.ones((2, 2)))
    images = set()
    for which in range(8):
        a, b = reorient(lr, hr, which)
        np.testing.assert_array_equal(np.kron(a, np.ones((2, 2))), b)
        images.add(a.tobytes() + bytes(a.shape))
    assert len(images) == 8
