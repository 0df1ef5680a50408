"""The phantom job (`cmrvsr-fast phantom`): phantom stacks as (S, T, H, W) .npy cines, each with a JSON sidecar
(seed, ED, ES, heart box, shape) and a PNG picture of its ED and ES frames and two between."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cmrvsr_fast.atomic import atomic_write, atomic_write_text
from cmrvsr_fast.data.phantom import Phantom, generate
from cmrvsr_fast.evaluation.viz import montage, save_png

EXTENSIONS = (".npy", ".json", ".png")


def phantom_name(seed: int) -> str:
    return f"phantom{seed:05d}"


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a handle, because np.save would append ".npy" to a temporary name
        np.save(handle, array)


def write_phantoms(
    out: str | Path, seed: int, count: int, size: int, frames: int, slices: int, overwrite: bool = False
) -> list[tuple[Path, Phantom]]:
    """Phantoms of seeds seed … seed+count−1 written into `out`: (path without suffix, phantom) for each. Files
    of the same names are replaced only with `overwrite` (else ValueError naming the first, nothing written)."""
    out = Path(out)
    seeds = range(seed, seed + count)
    clashes = [out / f"{phantom_name(s)}{ext}" for s in seeds for ext in EXTENSIONS]
    clashes = [str(path) for path in clashes if path.exists()]
    if clashes and not overwrite:
        raise ValueError(f"{clashes[0]} exists (use --overwrite to replace it)")
    written = []
    for s in seeds:
        base = out / phantom_name(s)
        p = generate(s, (size, size), frames, slices)
        atomic_write(f"{base}.npy", lambda tmp, cine=p.cine: _save_npy(tmp, cine))
        sidecar = {"seed": s, "ed": p.ed, "es": p.es, "heart_box": list(p.heart_box), "shape": list(p.cine.shape)}
        atomic_write_text(f"{base}.json", json.dumps(sidecar, indent=2) + "\n")
        pictured = sorted({0, p.es // 2, p.es, (p.es + frames) // 2})
        save_png(montage([[stack[t] for t in pictured] for stack in p.cine]), f"{base}.png")
        written.append((base, p))
    return written
