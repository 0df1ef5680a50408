"""Quality of checkpoints against OpenCV bicubic and Lanczos on any cines, frame by frame, in the heart box.

    python benchmarks/eval_cines.py --data npy:/path/to/cines --scale 4 --weights default
    python benchmarks/eval_cines.py --data synth:8 --data phantom:8 --scale 4 2 --weights a.safetensors b.safetensors

Data: `npy:DIR` (every DIR/*.npy holds one (T, H, W) or (S, T, H, W) cine in scanner units), `folder:DIR`,
`acdc:DIR`, `dsb:DIR` (the CLI's readers), `synth[:N]` and `phantom[:N]` (held-out seeds). Each cine is prepared
and degraded as the training data are (cmrvsr_fast.data.degrade): clipped at its 99.5 % point, scaled to 0–255,
cropped to multiples of 12, k-space truncated and bicubic-downsampled by r. Every method super-resolves the LR
cine; a checkpoint runs through `cmrvsr_fast.load` as a user's script would. Scores: PSNR/SSIM (paper SSIM) over
the frame and inside the heart box (CardiacPSNR/SSIM), per frame, averaged per sequence, then over sequences;
`worst_frame_vs_bicubic_db` is the lowest per-frame CardiacPSNR difference to bicubic over all frames.
`--reorient` also scores each cine transposed (the same cine, another orientation); `--consistency S …` scores
each checkpoint at each of the Upscaler's consistency strengths (0: the network's output alone).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from cmrvsr_fast import load
from cmrvsr_fast.data.datasets import make_sequences
from cmrvsr_fast.data.preprocess import crop_to_multiple
from cmrvsr_fast.data.readers import CineRecord, prepare_intensities
from cmrvsr_fast.data.records import load_records
from cmrvsr_fast.evaluation.evaluate import bicubic_upscale
from cmrvsr_fast.evaluation.metrics import cardiac_psnr, cardiac_ssim, psnr, ssim, to_grey_levels
from cmrvsr_fast.inference.consistency import DEFAULT_STRENGTH
from cmrvsr_fast.inference.upscaler import default_weights_path

METRICS = ("psnr", "ssim", "cardiac_psnr", "cardiac_ssim")


def npy_records(folder: Path) -> list[CineRecord]:
    records = []
    for path in sorted(folder.glob("*.npy")):
        raw = np.load(path)
        stack = raw[None] if raw.ndim == 3 else raw
        if stack.ndim != 4:
            raise SystemExit(f"{path}: expected a (T, H, W) or (S, T, H, W) array, got shape {raw.shape}")
        records.append(CineRecord(path.stem, np.ascontiguousarray(crop_to_multiple(prepare_intensities(stack))), 0))
    if not records:
        raise SystemExit(f"{folder}: no .npy cines")
    return records


def records_for(spec: str) -> list[CineRecord]:
    kind, _, where = spec.partition(":")
    if kind == "npy":
        return npy_records(Path(where))
    return load_records(spec, 144, 30, None)


def lanczos(lr: np.ndarray, scale: int) -> np.ndarray:
    """(T, h, w) -> (T, r·h, r·w) by OpenCV's Lanczos-4, the stronger classical baseline."""
    size = (lr.shape[-1] * scale, lr.shape[-2] * scale)
    return np.stack([cv2.resize(frame, size, interpolation=cv2.INTER_LANCZOS4) for frame in lr.astype(np.float32)])


def frame_scores(sr: np.ndarray, hr: np.ndarray, box) -> np.ndarray:
    """(T, 4): PSNR, SSIM, CardiacPSNR, CardiacSSIM of each frame."""
    sr = to_grey_levels(sr)
    return np.array(
        [
            (
                psnr(s, h),
                ssim(s, h, "paper"),
                cardiac_psnr(s[None], h[None], box),
                cardiac_ssim(s[None], h[None], box, "paper"),
            )
            for s, h in zip(sr, hr, strict=True)
        ]
    )


def evaluate(
    specs: list[str], scales: list[int], weights: list[str], reorient: bool, precision: str, strengths: list[float]
) -> dict:
    upscalers = {}
    for item in weights:
        paths = [default_weights_path(r) for r in scales] if item == "default" else [Path(item)]
        for path in paths:
            upscalers[str(path)] = load(path, device="cpu", precision=precision)
    rows, per_sequence = [], []
    for spec in specs:
        records = records_for(spec)
        if reorient:
            records += [
                CineRecord(f"{r.name}/transposed", np.ascontiguousarray(np.swapaxes(r.cine, -1, -2)), r.ed, r.es)
                for r in records
            ]
        for scale in scales:
            sequences = make_sequences(records, scale)
            methods = {
                "bicubic": lambda s, r=scale: bicubic_upscale(s.lr, r),
                "lanczos": lambda s, r=scale: lanczos(s.lr, r),
            }
            for name, up in upscalers.items():
                if up.scale == scale:
                    for strength in strengths:
                        label = Path(name).stem + (f" dc{strength:g}" if len(strengths) > 1 else "")
                        methods[label] = lambda s, u=up, c=strength: u.upscale(s.lr, ed=s.ed, es=s.es, consistency=c)
            scores = {name: [] for name in methods}
            for seq in tqdm(sequences, desc=f"{spec} ×{scale}", leave=False):
                for name, method in methods.items():
                    scores[name].append(frame_scores(method(seq), seq.hr, seq.box))
                for name in methods:
                    means = dict(zip(METRICS, scores[name][-1].mean(0).tolist(), strict=True))
                    per_sequence.append({"data": spec, "scale": scale, "sequence": seq.name, "method": name, **means})
            for name, values in scores.items():
                means = dict(zip(METRICS, np.array([v.mean(0) for v in values]).mean(0).tolist(), strict=True))
                worst = min(float((v[:, 2] - b[:, 2]).min()) for v, b in zip(values, scores["bicubic"], strict=True))
                rows.append({"data": spec, "scale": scale, "method": name, "sequences": len(values), **means,
                             "worst_frame_vs_bicubic_db": worst})  # fmt: skip
    return {"rows": rows, "per_sequence": per_sequence}


def format_rows(rows: list[dict]) -> str:
    header = ("data", "r", "method", "n", "PSNR", "SSIM", "cPSNR", "cSSIM", "ΔcPSNR", "worst")
    widths = (14, 2, 26, 3, 7, 7, 7, 7, 7, 6)
    lines = [
        " ".join(
            f"{h:<{w}}" if i in (0, 2) else f"{h:>{w}}" for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    ]
    base = {(r["data"], r["scale"]): r for r in rows if r["method"] == "bicubic"}
    for r in rows:
        gain = r["cardiac_psnr"] - base[(r["data"], r["scale"])]["cardiac_psnr"]
        lines.append(
            f"{r['data'][:14]:<14} {r['scale']:>2} {r['method'][:26]:<26} {r['sequences']:>3} {r['psnr']:7.2f} "
            f"{r['ssim']:7.4f} {r['cardiac_psnr']:7.2f} {r['cardiac_ssim']:7.4f} {gain:+7.2f} "
            f"{r['worst_frame_vs_bicubic_db']:+6.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", required=True, help="npy:DIR, folder:DIR, synth[:N], phantom[:N] …")
    parser.add_argument("--scale", type=int, nargs="+", default=[4])
    parser.add_argument("--weights", nargs="*", default=["default"], help="checkpoints, or 'default' (each scale's)")
    parser.add_argument("--precision", default="fp32", help="the Upscaler's precision (fp32, bf16, auto)")
    parser.add_argument("--reorient", action="store_true", help="also score every cine transposed")
    parser.add_argument("--consistency", type=float, nargs="+", default=[DEFAULT_STRENGTH],
                        help="the Upscaler's consistency strength(s): each checkpoint is scored with each")  # fmt: skip
    parser.add_argument("--json", help="write rows and per-sequence scores here")
    args = parser.parse_args(argv)
    result = evaluate(args.data, args.scale, args.weights, args.reorient, args.precision, args.consistency)
    print(format_rows(result["rows"]))
    if args.json:
        body = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "argv": sys.argv[1:], **result}
        Path(args.json).write_text(json.dumps(body, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
