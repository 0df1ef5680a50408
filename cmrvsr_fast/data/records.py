"""Records named by a data spec, as `--data` names them: phantom[:N] | synth[:N] (held-out seeds) | acdc:PATH |
dsb:PATH | folder:PATH; and the training/validation split a training run uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmrvsr_fast.data.datasets import phantom_records
from cmrvsr_fast.data.readers import CineRecord, read_acdc, read_dsb, read_folder
from cmrvsr_fast.data.synth import GENERATOR_VERSION, synth_records
from cmrvsr_fast.data.synth import HELD_OUT_SEEDS as SYNTH_HELD_OUT_SEEDS

HELD_OUT_PHANTOM_SEEDS = 1_000_000  # phantoms from here on are never used for training
READERS = {"acdc": read_acdc, "dsb": read_dsb, "folder": read_folder}


def load_records(spec: str, size: int, frames: int, limit: int | None) -> list[CineRecord]:
    """The records of a data spec (phantoms of size² HR pixels and `frames` frames; at most `limit` records of a
    dataset). ValueError names the spec and what was expected."""
    kind, _, where = spec.partition(":")
    if kind == "phantom":
        count = int(where) if where else 4
        return phantom_records(range(HELD_OUT_PHANTOM_SEEDS, HELD_OUT_PHANTOM_SEEDS + count), (size, size), frames)
    if kind == "synth":
        count = int(where) if where else 8
        return synth_records(range(SYNTH_HELD_OUT_SEEDS, SYNTH_HELD_OUT_SEEDS + count))
    if kind not in READERS or not where:
        raise ValueError(f"--data {spec!r}: expected phantom[:N], synth[:N], acdc:PATH, dsb:PATH or folder:PATH")
    if not Path(where).is_dir():
        raise ValueError(f"--data {spec!r}: {where} is not a folder")
    records = READERS[kind](where)
    return records[:limit] if limit else records


def training_records(spec: str, size: int, count_default: int = 64) -> tuple[list[CineRecord], list[CineRecord], str]:
    """(train, validation, description) for a data spec. Phantoms: seeds 0 … N−1 with 20–35 frames for training
    and held-out seeds for validation; a dataset: a seeded 80/20 split of its records."""
    kind, _, where = spec.partition(":")
    if kind == "phantom":
        count = int(where) if where else count_default
        train = [
            r
            for seed in range(count)
            for r in phantom_records(range(seed, seed + 1), (size, size), 20 + 5 * (seed % 4))
        ]
        valid = load_records("phantom:4", size, 30, None)
        return train, valid, f"phantom seeds 0-{count - 1} ({size}×{size}, 20-35 frames); validation: 4 held-out seeds"
    if kind == "synth":
        count = int(where) if where else 192
        train = synth_records(range(count))
        # Validation every few hundred steps: small held-out cases keep it to seconds.
        valid = synth_records(range(SYNTH_HELD_OUT_SEEDS, SYNTH_HELD_OUT_SEEDS + 6), display=144, frames=20)
        return train, valid, f"{GENERATOR_VERSION} seeds 0-{count - 1}; validation: 6 held-out seeds (144², 20 frames)"
    records = load_records(spec, size, 30, None)
    if len(records) < 2:
        raise ValueError(f"--data {spec}: {len(records)} record(s) cannot be split into training and validation")
    order = np.random.default_rng(0).permutation(len(records))
    cut = min(len(records) - 1, max(1, round(0.8 * len(records))))
    return [records[i] for i in order[:cut]], [records[i] for i in order[cut:]], f"{spec} (seeded 80/20 split)"
