"""Cardiac phase code (paper Eq. 1 and the public implementation's variant) and ES estimation."""

from __future__ import annotations

import logging
import math

import numpy as np

from cmrvsr_fast.cardiac.cvcompat import gaussian_blur5, otsu_mask
from cmrvsr_fast.cardiac.intensity import to_display_range
from cmrvsr_fast.cardiac.roi import first_slice, heart_box
from cmrvsr_fast.model.config import PHASE_CODE_VARIANTS

log = logging.getLogger(__name__)


def phase_code(frames: int, ed: int, es: int, variant: str = "public") -> np.ndarray:
    """One phase code per frame, in [−1, 1]: (T,) float64. P[ED] = 1, P[ES] = −1.

    Systole (ED → ES) maps onto cos over [0, π), diastole (ES → next ED) onto cos over [π, 2π).
    variant="public": the authors' code: cos(linspace(0, π, L, endpoint=False)) ++ cos(linspace(π, 2π, T − L,
        endpoint=False)) with L = (ES − ED) mod T, rolled so that frame ED starts the cycle.
    variant="paper": Eq. 1 read literally, P_t = cos(π (t−ED)/(ES−ED)) for ED < t ≤ ES, else
        cos(π (1 + ((t−ES) mod T)/(T − (ES−ED)))).
    The two agree whenever ED < ES (the usual case, ED = 0); they differ when the cycle wraps (ES < ED), where
    the literal formula is no longer a cycle. A single-frame cine gets [1.0].
    """
    if variant not in PHASE_CODE_VARIANTS:
        raise ValueError(f"phase-code variant must be one of {PHASE_CODE_VARIANTS}, got {variant!r}")
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    for name, index in (("ED", ed), ("ES", es)):
        if not 0 <= index < frames:
            raise ValueError(f"{name} frame {index} is outside the cine's {frames} frames (0-based)")
    if frames == 1:
        return np.ones(1)
    if ed == es:
        raise ValueError(f"ED and ES are the same frame ({ed}); the phase code needs two distinct frames")
    if variant == "public":
        systole = (es - ed) % frames
        cycle = np.concatenate(
            [
                np.cos(np.linspace(0.0, np.pi, systole, endpoint=False)),
                np.cos(np.linspace(np.pi, 2.0 * np.pi, frames - systole, endpoint=False)),
            ]
        )
        return np.roll(cycle, ed)
    t = np.arange(frames)
    systolic = (ed < t) & (t <= es)
    code = np.cos(np.pi * (1.0 + ((t - es) % frames) / (frames - (es - ed))))
    code[systolic] = np.cos(np.pi * (t[systolic] - ed) / (es - ed))
    return code


def es_search_range(frames: int) -> range:
    """Offsets from ED searched for ES: the public [floor(0.25 T), ceil(0.6 T)), never offset 0."""
    return range(max(1, math.floor(0.25 * frames)), max(2, math.ceil(0.6 * frames)))


def fallback_es(frames: int, ed: int = 0) -> int:
    """ES at 35 % of the cycle after ED (typical systolic fraction), used when the images give no answer."""
    if frames < 2:
        return ed
    return (ed + min(max(1, round(0.35 * frames)), frames - 1)) % frames


def estimate_es(cine: np.ndarray, ed: int = 0, box: tuple[int, int, int, int] | None = None) -> int:
    """ES frame of a (T, H, W) cine (or the first slice of an (S, T, H, W) stack) by the public method.

    Inside the heart box (heart_box() unless given), each frame is truncated to uint8 on the 0–255 scale,
    Gaussian-blurred (5×5) and Otsu-thresholded; ES is the frame in ED + [floor(0.25 T), ceil(0.6 T)) whose mask
    differs most from ED's. The difference is the public code's: it subtracts uint8 masks, so a pixel that
    turns foreground counts 255 and one that turns background counts 1 (kept for fidelity with its phase
    codes). A degenerate crop or masks that never change fall back to fallback_es() with the reason logged;
    a valid cine never raises.
    """
    frames = to_display_range(first_slice(cine))
    count = frames.shape[0]
    if not 0 <= ed < count:
        raise ValueError(f"ED frame {ed} is outside the cine's {count} frames (0-based)")
    if count < 2:
        return ed
    h0, h1, w0, w1 = heart_box(frames) if box is None else box
    crop = frames[:, h0:h1, w0:w1]
    if crop.shape[1] < 2 or crop.shape[2] < 2:
        log.info("estimate_es: the heart crop is degenerate; ES set to 35 %% of the cycle")
        return fallback_es(count, ed)

    def mask(index: int) -> np.ndarray:
        return otsu_mask(gaussian_blur5(crop[index].astype(np.uint8)))[1]

    reference = mask(ed)
    candidates = [(ed + offset) % count for offset in es_search_range(count)]
    scores = [int(np.sum(reference - mask(index))) for index in candidates]  # uint8 wrap-around, as public
    if max(scores) == 0:
        log.info("estimate_es: the heart masks do not change; ES set to 35 %% of the cycle")
        return fallback_es(count, ed)
    return candidates[int(np.argmax(scores))]
