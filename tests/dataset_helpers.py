"""Dataset fixtures shared by the reader and evaluation tests: an ACDC-style patient folder written from a
phantom in scanner-like integer units."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from cmrvsr_fast.data import generate


def scanner_units(cine: np.ndarray) -> np.ndarray:
    return (cine * 6.0 + 20).astype(np.int16)  # 0–255 phantom -> 12-bit-like integers


def write_acdc_patient(root: Path, number: int, frames: int = 10, ed: int = 1, es: int = 4) -> np.ndarray:
    stack = generate(number, (40, 38), frames, slices=2).cine  # (Z, T, X, Y)
    folder = root / "training" / f"patient{number:03d}"
    folder.mkdir(parents=True)
    volume = np.transpose(scanner_units(stack), (2, 3, 0, 1))  # (X, Y, Z, T)
    nib.save(nib.Nifti1Image(volume, np.diag([1.4, 1.4, 10, 1])), folder / f"patient{number:03d}_4d.nii.gz")
    (folder / "Info.cfg").write_text(
        f"ED: {ed}\nES: {es}\nGroup: NOR\nHeight: 180.0\nNbFrame: {frames}\nWeight: 70.0\n"
    )
    return stack
