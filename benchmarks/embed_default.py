"""Make a training run's best checkpoint the embedded default, with its quality measured and recorded.

1. Scores the checkpoint and bicubic on held-out phantoms (seeds from 1,000,000, never used in training) at its
   scale: PSNR, SSIM, CardiacPSNR, CardiacSSIM (paper SSIM), and checks the quality bar of the default
   (≥ 1.5 dB CardiacPSNR and ≥ 0.02 CardiacSSIM over bicubic).
2. Writes those numbers and the training curve into the card; draws the curve as docs/training_curve.png.
3. Copies weights + card into cmrvsr_fast/weights/ (the weights file unchanged, so its sha256 still holds).

    python benchmarks/embed_default.py RUN_DIR [--phantoms 16 --size 144]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
from pathlib import Path

from cmrvsr_fast.atomic import atomic_write, atomic_write_text
from cmrvsr_fast.checkpoint import card_path, load_checkpoint
from cmrvsr_fast.cli import HELD_OUT_PHANTOM_SEEDS
from cmrvsr_fast.data.datasets import phantom_records
from cmrvsr_fast.evaluate import evaluate, format_table
from cmrvsr_fast.upscaler import default_weights_path
from cmrvsr_fast.viz import line_plot, save_image

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a `cmrvsr-fast train --out` folder")
    parser.add_argument("--phantoms", type=int, default=16)
    parser.add_argument("--size", type=int, default=144)
    parser.add_argument("--frames", type=int, default=30)
    args = parser.parse_args()

    weights = args.run / "best.safetensors"
    model, card = load_checkpoint(weights)
    seeds = range(HELD_OUT_PHANTOM_SEEDS, HELD_OUT_PHANTOM_SEEDS + args.phantoms)
    records = phantom_records(seeds, (args.size, args.size), args.frames)
    rows = evaluate(records, [card.config.scale], lambda s: ("default", model, card.normalisation), "paper")
    print(format_table(rows))
    bicubic, ours = rows
    gain = {
        "cardiac_psnr_db": ours.cardiac_psnr - bicubic.cardiac_psnr,
        "cardiac_ssim": ours.cardiac_ssim - bicubic.cardiac_ssim,
    }
    passed = gain["cardiac_psnr_db"] >= 1.5 and gain["cardiac_ssim"] >= 0.02
    print(f"gain over bicubic: {gain['cardiac_psnr_db']:+.3f} dB CardiacPSNR, {gain['cardiac_ssim']:+.4f} CardiacSSIM;"
          f" quality bar (1.5 dB, 0.02) {'met' if passed else 'NOT met'}")  # fmt: skip

    with open(args.run / "log.csv", newline="") as handle:
        history = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    curve = {
        "model": ([r["step"] for r in history], [r["cardiac_psnr"] for r in history]),
        "bicubic": ([r["step"] for r in history], [r["bicubic_cardiac_psnr"] for r in history]),
    }
    title = f"{card.training.get('preset', '')}: validation CardiacPSNR (4 held-out phantoms)"
    save_image(line_plot(curve, title, "step", "dB"), ROOT / "docs" / "training_curve.png")

    metrics = dict(card.metrics)
    metrics["held_out_phantoms"] = {
        "seeds": f"{seeds.start}-{seeds.stop - 1}",
        "size": args.size,
        "frames": args.frames,
        "ssim_variant": "paper",
        "rows": [r.as_dict() for r in rows],
        "gain_over_bicubic": gain,
        "quality_bar_met": passed,
    }
    metrics["training_curve"] = [
        {k: r[k] for k in ("step", "loss", "cardiac_psnr", "cardiac_ssim", "wall_s")} for r in history
    ]
    card = dataclasses.replace(card, metrics=metrics)
    target = default_weights_path()
    atomic_write(target, lambda tmp: Path(tmp).write_bytes(weights.read_bytes()))
    atomic_write_text(card_path(target), card.to_json())
    atomic_write_text(args.run / "embedded_quality.json", json.dumps(metrics["held_out_phantoms"], indent=2) + "\n")
    print(f"embedded {weights} as {target}")


if __name__ == "__main__":
    main()
