"""Table-1-style evaluation: bicubic and a model over a dataset at ×2/×3/×4 (PSNR, SSIM, CardiacPSNR/SSIM).

Each sequence is scored frame by frame and averaged over its frames; the table averages over sequences, as the
public implementation's predictor does. Outputs are rounded and clamped to 0–255 before scoring.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm import tqdm

from cmrvsr_fast.data.datasets import Sequence, make_sequences
from cmrvsr_fast.data.degrade import bicubic_resize
from cmrvsr_fast.data.preprocess import denormalise, normalise
from cmrvsr_fast.data.readers import CineRecord
from cmrvsr_fast.evaluation.metrics import cardiac_psnr, cardiac_ssim, psnr, ssim, to_grey_levels
from cmrvsr_fast.inference.engine import Engine
from cmrvsr_fast.model.network import CMRVSR

# For a scale, the model to evaluate and its (mean, std) normalisation, or None for bicubic only.
ModelForScale = Callable[[int], "tuple[str, CMRVSR, tuple[float, float]] | None"]


@dataclass
class EvalRow:
    scale: int
    method: str
    sequences: int
    psnr: float
    ssim: float
    cardiac_psnr: float
    cardiac_ssim: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """(T, h, w) -> (T, r·h, r·w) with the same OpenCV-style bicubic kernel as the degradation."""
    return bicubic_resize(lr, lr.shape[-2] * scale, lr.shape[-1] * scale)


@torch.no_grad()
def super_resolve(
    model: CMRVSR | Engine, lr: np.ndarray, phase: np.ndarray, normalisation: tuple[float, float], device: str = "cpu"
) -> np.ndarray:
    """One (T, h, w) LR cine on 0–255 -> (T, r·h, r·w) on 0–255 (not rounded) through the model (eval mode) or
    an Engine."""
    mean, std = normalisation
    inputs = torch.from_numpy(normalise(lr, mean, std))[None, :, None].to(device)
    codes = torch.from_numpy(np.asarray(phase, dtype=np.float32))[None].to(device)
    runner = model.eval() if isinstance(model, torch.nn.Module) else model  # a CMRVSR or an Engine
    output = runner(inputs, codes)[0, :, 0].float().cpu().numpy()
    return denormalise(output, mean, std)


def score(sr: np.ndarray, seq: Sequence, ssim_variant: str) -> tuple[float, float, float, float]:
    sr = to_grey_levels(sr)
    return (
        psnr(sr, seq.hr),
        ssim(sr, seq.hr, ssim_variant),
        cardiac_psnr(sr, seq.hr, seq.box),
        cardiac_ssim(sr, seq.hr, seq.box, ssim_variant),
    )


def evaluate(
    records: list[CineRecord],
    scales: list[int],
    model_for_scale: ModelForScale,
    ssim_variant: str = "paper",
    device: str = "cpu",
    progress: bool = True,
) -> list[EvalRow]:
    """Bicubic and (where model_for_scale gives one) the model at each scale -> one row per (scale, method)."""
    rows = []
    for scale in scales:
        sequences = make_sequences(records, scale)
        chosen = model_for_scale(scale)
        methods: dict[str, Callable[[Sequence], np.ndarray]] = {"bicubic": lambda s, r=scale: bicubic_upscale(s.lr, r)}
        if chosen is not None:
            name, model, norm = chosen
            model = model.to(device)
            methods[name] = lambda s, m=model, n=norm: super_resolve(m, s.lr, s.phase, n, device)
        rows += score_methods(scale, sequences, methods, ssim_variant, progress)
    return rows


def score_methods(
    scale: int,
    sequences: list[Sequence],
    methods: dict[str, Callable[[Sequence], np.ndarray]],
    ssim_variant: str = "paper",
    progress: bool = False,
) -> list[EvalRow]:
    """One row per method: each sequence's scores (means over its frames) averaged over the sequences."""
    scores: dict[str, list[tuple[float, ...]]] = {name: [] for name in methods}
    bar = tqdm(total=len(sequences) * len(methods), desc=f"eval ×{scale}", disable=not progress, leave=False)
    for seq in sequences:
        for name, method in methods.items():
            scores[name].append(score(method(seq), seq, ssim_variant))
            bar.update()
    bar.close()
    return [
        EvalRow(scale, name, len(values), *(float(v) for v in np.mean(np.asarray(values), axis=0)))
        for name, values in scores.items()
    ]


def format_table(rows: list[EvalRow]) -> str:
    """A plain-text table in the layout of the paper's Table 1."""
    header = (
        f"{'scale':>5}  {'method':<24} {'seqs':>5}  {'PSNR':>8}  {'SSIM':>7}  {'CardiacPSNR':>11}  {'CardiacSSIM':>11}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{'×' + str(r.scale):>5}  {r.method:<24} {r.sequences:>5}  {r.psnr:8.4f}  {r.ssim:7.4f}  "
            f"{r.cardiac_psnr:11.4f}  {r.cardiac_ssim:11.4f}"
        )
    return "\n".join(lines)
