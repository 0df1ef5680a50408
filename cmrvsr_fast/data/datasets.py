"""torch Datasets: training clips (docs/model.md), whole sequences for validation, and the phantom as a source.

A Sequence is one 2-D+t slice with everything the network and the metrics need at one scale: HR and LR frames
on the 0–255 scale, the phase code, and the heart box of its record (computed on the record's first slice, as
the public implementation does for a patient).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from cmrvsr_fast.cardiac.phase import estimate_es, phase_code
from cmrvsr_fast.cardiac.roi import Box, heart_box
from cmrvsr_fast.data.degrade import degrade
from cmrvsr_fast.data.phantom import generate
from cmrvsr_fast.data.preprocess import crop_to_multiple, normalise
from cmrvsr_fast.data.readers import CineRecord


@dataclass
class Sequence:
    """hr: (T, H, W), lr: (T, H/r, W/r), both float32 on 0–255; phase: (T,); box: heart box in HR pixels."""

    name: str
    hr: np.ndarray
    lr: np.ndarray
    phase: np.ndarray
    ed: int
    es: int
    box: Box


def make_sequences(records: list[CineRecord], scale: int, phase_variant: str = "public") -> list[Sequence]:
    """Every slice of every record as a Sequence at `scale` (LR by the degradation of docs/model.md; ES estimated
    on the record's first slice where the record does not give it)."""
    sequences = []
    for record in records:
        es = record.es if record.es is not None else estimate_es(record.cine, ed=record.ed)
        box = heart_box(record.cine)
        code = phase_code(record.cine.shape[1], record.ed, es, phase_variant)
        for index, hr in enumerate(record.cine):
            name = record.name if len(record.cine) == 1 else f"{record.name}/slice{index:02d}"
            sequences.append(Sequence(name, hr, degrade(hr, scale), code, record.ed, es, box))
    return sequences


def phantom_records(seeds: range, size: tuple[int, int] = (128, 128), frames: int = 30, slices: int = 1):
    """Phantom stacks as CineRecords (true ED/ES), one per seed, cropped to multiples of 12 like every source."""
    records = []
    for seed in seeds:
        p = generate(seed, size, frames, slices)
        cine = np.ascontiguousarray(crop_to_multiple(p.cine))
        records.append(CineRecord(f"phantom{seed:05d}", cine, p.ed, p.es, f"phantom seed {seed}"))
    return records


def reorient(lr: np.ndarray, hr: np.ndarray, which: int) -> tuple[np.ndarray, np.ndarray]:
    """One of the 8 symmetries of the square (0 = identity), applied alike to LR and HR (…, H, W) frames:
    bit 0 flips columns, bit 1 flips rows, bit 2 swaps rows and columns."""
    if which & 1:
        lr, hr = lr[..., ::-1], hr[..., ::-1]
    if which & 2:
        lr, hr = lr[..., ::-1, :], hr[..., ::-1, :]
    if which & 4:
        lr, hr = np.swapaxes(lr, -1, -2), np.swapaxes(hr, -1, -2)
    return lr, hr


class ClipDataset(Dataset):
    """Training clips (docs/model.md): for every frame t of every sequence, the clip of `clip_frames` frames ending at
    t (cyclically), with `warmup` true neighbouring frames on each side; a random LR crop and the matching HR
    crop; a random one of the 8 orientations (flips and transposition). Items (all float32 tensors, normalised):
        lr (clip + 2n, 1, crop, crop), hr (clip, 1, r·crop, r·crop), phase (clip + 2n,)
    Feed them to CMRVSR(..., warmup_included=True). Randomness follows torch's seed (DataLoader workers included).
    """

    def __init__(
        self,
        sequences: list[Sequence],
        scale: int,
        clip_frames: int = 7,
        warmup: int = 6,
        crop: int = 32,
        flips: bool = True,
        normalisation: tuple[float, float] = (54.089, 48.084),
    ) -> None:
        if not sequences:
            raise ValueError("ClipDataset needs at least one sequence")
        small = [s.name for s in sequences if min(s.lr.shape[1:]) < crop]
        if small:
            raise ValueError(f"LR frames smaller than the {crop}×{crop} crop: {small[:3]}")
        self.sequences, self.scale, self.clip_frames, self.warmup = sequences, scale, clip_frames, warmup
        self.crop, self.flips, self.normalisation = crop, flips, normalisation
        self.index = [(i, t) for i, s in enumerate(sequences) for t in range(len(s.hr))]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        sequence_index, end = self.index[item]
        seq = self.sequences[sequence_index]
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        frames = len(seq.hr)
        first = end - self.clip_frames + 1
        extended = np.arange(first - self.warmup, end + 1 + self.warmup) % frames
        centre = np.arange(first, end + 1) % frames
        top = int(rng.integers(0, seq.lr.shape[1] - self.crop + 1))
        left = int(rng.integers(0, seq.lr.shape[2] - self.crop + 1))
        r, c = self.scale, self.crop
        lr = seq.lr[extended, top : top + c, left : left + c]
        hr = seq.hr[centre, r * top : r * (top + c), r * left : r * (left + c)]
        if self.flips:  # one of the 8 orientations of the square: no preferred orientation is learnt
            lr, hr = reorient(lr, hr, int(rng.integers(8)))
        mean, std = self.normalisation
        return {
            "lr": torch.from_numpy(np.ascontiguousarray(normalise(lr, mean, std)))[:, None],
            "hr": torch.from_numpy(np.ascontiguousarray(normalise(hr, mean, std)))[:, None],
            "phase": torch.from_numpy(seq.phase[extended].astype(np.float32)),
        }


class SequenceDataset(Dataset):
    """Whole sequences for validation: lr (T, 1, h, w) normalised, hr (T, H, W) on 0–255, phase (T,), box."""

    def __init__(self, sequences: list[Sequence], normalisation: tuple[float, float] = (54.089, 48.084)) -> None:
        self.sequences, self.normalisation = sequences, normalisation

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, item: int) -> dict[str, object]:
        seq = self.sequences[item]
        mean, std = self.normalisation
        return {
            "name": seq.name,
            "lr": torch.from_numpy(normalise(seq.lr, mean, std))[:, None],
            "hr": torch.from_numpy(seq.hr),
            "phase": torch.from_numpy(seq.phase.astype(np.float32)),
            "box": torch.tensor(seq.box),
        }


class PhantomClipStream(IterableDataset):
    """An endless stream of training clips from fresh phantoms: each new seed (start, start + 1, …, split across
    DataLoader workers) gives a phantom cine, and `clips_per_phantom` random clips are drawn from it."""

    def __init__(
        self,
        scale: int,
        start_seed: int = 0,
        size: tuple[int, int] = (128, 128),
        frames: int = 30,
        clips_per_phantom: int = 8,
        **clip_options,
    ) -> None:
        self.scale, self.start_seed, self.size, self.frames = scale, start_seed, size, frames
        self.clips_per_phantom, self.clip_options = clips_per_phantom, clip_options

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker = torch.utils.data.get_worker_info()
        seed, step = (self.start_seed, 1) if worker is None else (self.start_seed + worker.id, worker.num_workers)
        while True:
            sequences = make_sequences(phantom_records(range(seed, seed + 1), self.size, self.frames), self.scale)
            clips = ClipDataset(sequences, self.scale, **self.clip_options)
            for _ in range(self.clips_per_phantom):
                yield clips[int(torch.randint(0, len(clips), ()).item())]
            seed += step
