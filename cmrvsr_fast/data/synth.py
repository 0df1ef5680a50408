"""Acquisition-faithful synthetic cines: the training data of the embedded defaults.

A case is a randomised scene (scenes.py: short-axis, long-axis 2/3/4-chamber, or generic textured shapes)
drawn at twice the display matrix, then acquired as a scanner would (acquisition.py: a random acquisition
matrix, partial Fourier, k-space filter, noise, zero-filling, magnitude) and prepared like every data source
(clipped at its 99.5 % point, scaled to 0–255, rounded). Its HR frames therefore carry the blur, ringing,
anisotropy and noise floor of clinical cines, and the network learns what a scanner's image looks like rather
than what a drawing on the pixel grid looks like. Everything follows from the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmrvsr_fast.cardiac.intensity import clip_and_scale
from cmrvsr_fast.data.acquisition import Acquisition, acquire
from cmrvsr_fast.data.readers import CineRecord
from cmrvsr_fast.data.scenes import SCENE_KINDS, draw_scene

GENERATOR_VERSION = "synth/1"  # bump when a change alters what a seed produces (recorded in model cards)
SCENE_SHARES = {"sax": 0.4, "lax": 0.35, "texture": 0.25}
DISPLAY_SIZES = (144, 168, 192, 216, 240)  # multiples of 24: every scale divides, and the 12-crop is a no-op
OVERSAMPLING = 2  # the scene's grid is this much finer than the display matrix
HELD_OUT_SEEDS = 1_000_000  # synthetic cases from here on are never used for training


@dataclass(frozen=True)
class SynthCase:
    """cine: (T, H, W) float32 on 0–255 (integral values); ed, es: frame indices; kind and description of the
    scene; acquisition: the protocol it was acquired with."""

    cine: np.ndarray
    ed: int
    es: int
    kind: str
    description: str
    acquisition: Acquisition


def synth_case(seed: int, display: int | None = None, frames: int | None = None, kind: str | None = None) -> SynthCase:
    """The case of `seed`; display (square matrix), frames and scene kind are drawn from the seed unless given."""
    rng = np.random.default_rng([seed, 0x5EED])
    kind = kind or str(rng.choice(list(SCENE_SHARES), p=list(SCENE_SHARES.values())))
    if kind not in SCENE_KINDS:
        raise ValueError(f"kind must be one of {SCENE_KINDS}, got {kind!r}")
    display = display or int(rng.choice(DISPLAY_SIZES))
    frames = frames or int(rng.integers(16, 31))
    if display < 24 or display % 12:
        raise ValueError(f"display must be a multiple of 12 and at least 24, got {display}")
    if not 8 <= frames <= 40:
        raise ValueError(f"frames must be in 8…40, got {frames}")
    es = round(rng.uniform(0.3, 0.4) * frames)
    fine = OVERSAMPLING * display
    scene, description = draw_scene(kind, (fine, fine), frames, es, rng)
    protocol = Acquisition.random(rng)
    cine = clip_and_scale(acquire(scene, (display, display), protocol, rng))
    return SynthCase(cine, 0, es, kind, description, protocol)


def synth_records(seeds: range, display: int | None = None, frames: int | None = None) -> list[CineRecord]:
    """Synthetic cases as single-slice CineRecords with their true ED/ES."""
    records = []
    for seed in seeds:
        case = synth_case(seed, display, frames)
        source = f"{GENERATOR_VERSION} seed {seed}: {case.description}"
        records.append(CineRecord(f"synth{seed:07d}", case.cine[None], case.ed, case.es, source))
    return records
