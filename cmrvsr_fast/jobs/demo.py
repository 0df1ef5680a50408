"""The demo job (`cmrvsr-fast demo`): the main job on the embedded default weights, on a held-out phantom stack
degraded ×r, super-resolved, written out as NIfTI, pictured and scored against bicubic."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from cmrvsr_fast.atomic import atomic_write
from cmrvsr_fast.cardiac.phase import estimate_es
from cmrvsr_fast.cardiac.roi import heart_box
from cmrvsr_fast.data.datasets import Sequence
from cmrvsr_fast.data.degrade import degrade
from cmrvsr_fast.data.phantom import generate
from cmrvsr_fast.data.records import HELD_OUT_PHANTOM_SEEDS
from cmrvsr_fast.evaluation.evaluate import EvalRow, bicubic_upscale, score_methods
from cmrvsr_fast.evaluation.viz import montage, save_png
from cmrvsr_fast.inference.upscaler import load
from cmrvsr_fast.io.nifti import upscaled_affine

DEMO_SEED = HELD_OUT_PHANTOM_SEEDS + 42
# A plausible HR grid for the NIfTI files: 1.8 mm pixels, 8 mm slices.
HR_AFFINE = np.diag([1.8, 1.8, 8.0, 1.0])
ERROR_GAIN = 3  # the montage's error columns are magnified this much to be visible


@dataclass
class DemoResult:
    """What the demo did and scored: rows are bicubic's then the model's."""

    seed: int
    slices: int
    frames: int
    size: int
    scale: int
    config: dict
    device: str
    weights: dict  # the card's training facts
    rows: list[EvalRow]
    es_true: int
    es_estimated: int
    seconds: float
    out: Path

    @property
    def cardiac_psnr_gain_db(self) -> float:
        return self.rows[1].cardiac_psnr - self.rows[0].cardiac_psnr

    def as_dict(self) -> dict[str, object]:
        return {"seed": self.seed, "scale": self.scale, "seconds": round(self.seconds, 1), "weights": self.weights,
                "rows": [row.as_dict() for row in self.rows], "cardiac_psnr_gain_db": self.cardiac_psnr_gain_db,
                "es_true": self.es_true, "es_estimated": self.es_estimated}  # fmt: skip


def run_demo(
    out: str | Path,
    weights: str | None = None,
    device: str = "auto",
    scale: int | None = None,
    size: int = 144,
    frames: int = 30,
    slices: int = 3,
) -> DemoResult:
    """Upscale the demo phantom with `weights` (default: the embedded default of `scale`), write sr, bicubic, lr
    and hr as NIfTI and a montage into `out`, and score SR and bicubic against the HR phantom."""
    started = time.perf_counter()
    upscaler = load(weights, device, scale=scale)
    r = upscaler.scale
    out = Path(out)
    phantom = generate(DEMO_SEED, (size, size), frames, slices)
    hr = phantom.cine  # (S, T, H, W) on 0–255
    lr = np.stack([degrade(s, r) for s in hr])
    es_estimate = estimate_es(lr)  # from the LR cine, as for a real acquisition; ED is frame 0
    sr = upscaler.upscale(lr, ed=0, es=es_estimate)
    bicubic = np.stack([bicubic_upscale(s, r) for s in lr])
    box = heart_box(hr)
    sequences = [Sequence(str(i), hr[i], lr[i], np.zeros(frames), 0, phantom.es, box) for i in range(slices)]
    outputs = {"bicubic": bicubic, "cmrvsr": sr}  # already computed for the whole stack
    methods = {name: (lambda s, stack=stack: stack[int(s.name)]) for name, stack in outputs.items()}
    rows = score_methods(r, sequences, methods, "paper")
    write_volumes(out, r, {"sr": sr, "bicubic": bicubic, "lr": lr, "hr": hr})
    save_png(montage(comparison(lr, bicubic, sr, hr, r, (0, phantom.es))), out / "montage.png")
    return DemoResult(seed=DEMO_SEED, slices=slices, frames=frames, size=size, scale=r,
                      config=upscaler.card.config.to_dict(), device=str(upscaler.device),
                      weights=upscaler.card.training, rows=rows, es_true=phantom.es, es_estimated=es_estimate,
                      seconds=time.perf_counter() - started, out=out)  # fmt: skip


def write_volumes(out: Path, scale: int, stacks: dict[str, np.ndarray]) -> None:
    """Each (S, T, H, W) stack as NAME.nii.gz, (X, Y, Z, T) with X along image columns as upscale reads and
    writes NIfTI (io/nifti.py). The LR grid's voxel centres are the centres of r×r HR blocks (the half-pixel
    geometry of the degradation), so all the files overlay in a viewer."""
    lr_affine = HR_AFFINE @ np.linalg.inv(upscaled_affine(np.eye(4), scale))
    for name, data in stacks.items():
        affine = lr_affine if name == "lr" else HR_AFFINE
        volume = np.ascontiguousarray(np.transpose(data, (3, 2, 0, 1)), dtype=np.float32)
        atomic_write(out / f"{name}.nii.gz", lambda tmp, v=volume, a=affine: nib.save(nib.Nifti1Image(v, a), tmp),
                     keep_suffix=True)  # fmt: skip


def comparison(lr, bicubic, sr, hr, scale: int, frames: tuple[int, ...]) -> list[list[np.ndarray]]:
    """Montage rows for the middle slice at each of `frames`: LR (pixel-repeated) | bicubic | SR | HR | magnified
    |bicubic − HR| | magnified |SR − HR|."""
    middle = len(hr) // 2

    def error(image: np.ndarray, t: int) -> np.ndarray:
        return np.clip(ERROR_GAIN * np.abs(image[middle, t] - hr[middle, t]), 0, 255)

    return [
        [np.kron(lr[middle, t], np.ones((scale, scale))), bicubic[middle, t], sr[middle, t], hr[middle, t],
         error(bicubic, t), error(sr, t)]
        for t in frames
    ]  # fmt: skip
