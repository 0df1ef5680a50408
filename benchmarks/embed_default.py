"""Make a training run's best checkpoint the embedded default of its scale, with its quality measured and recorded.

1. Scores the checkpoint, bicubic and Lanczos on held-out data of both domains, at its scale: synthetic cases
   (seeds from 1,000,000, never used in training) and phantoms (the same), PSNR, SSIM, CardiacPSNR,
   CardiacSSIM (paper SSIM).
2. Writes those numbers and the training curve into the card; draws the curve as docs/training_curve_x{r}.png.
3. Copies weights + card into cmrvsr_fast/weights/default-x{r}.* (the weights file unchanged, so its sha256
   still holds).

    python benchmarks/embed_default.py RUN_DIR [--synth 12 --phantoms 8]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
from pathlib import Path

from eval_cines import lanczos  # the baseline beside this script

from cmrvsr_fast.atomic import atomic_write, atomic_write_text
from cmrvsr_fast.data.datasets import make_sequences, phantom_records
from cmrvsr_fast.data.records import HELD_OUT_PHANTOM_SEEDS
from cmrvsr_fast.data.synth import HELD_OUT_SEEDS, synth_records
from cmrvsr_fast.evaluation.evaluate import bicubic_upscale, format_table, score_methods, super_resolve
from cmrvsr_fast.evaluation.viz import line_plot, save_image
from cmrvsr_fast.inference.upscaler import default_weights_path
from cmrvsr_fast.model.checkpoint import card_path, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def held_out_rows(model, card, records) -> list[dict]:
    r = card.config.scale
    methods = {
        "bicubic": lambda s: bicubic_upscale(s.lr, r),
        "lanczos": lambda s: lanczos(s.lr, r),
        "default": lambda s: super_resolve(model, s.lr, s.phase, card.normalisation),
    }
    rows = score_methods(r, make_sequences(records, r), methods, "paper", progress=True)
    print(format_table(rows))
    return [row.as_dict() for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a `cmrvsr-fast train --out` folder")
    parser.add_argument("--synth", type=int, default=12, help="held-out synthetic cases")
    parser.add_argument("--phantoms", type=int, default=8, help="held-out phantoms (144×144, 30 frames)")
    args = parser.parse_args()

    weights = args.run / "best.safetensors"
    model, card = load_checkpoint(weights)
    scale = card.config.scale
    held_out = {
        "synthetic": {
            "seeds": f"{HELD_OUT_SEEDS}-{HELD_OUT_SEEDS + args.synth - 1}",
            "rows": held_out_rows(model, card, synth_records(range(HELD_OUT_SEEDS, HELD_OUT_SEEDS + args.synth))),
        },
        "phantom": {
            "seeds": f"{HELD_OUT_PHANTOM_SEEDS}-{HELD_OUT_PHANTOM_SEEDS + args.phantoms - 1}",
            "rows": held_out_rows(
                model,
                card,
                phantom_records(range(HELD_OUT_PHANTOM_SEEDS, HELD_OUT_PHANTOM_SEEDS + args.phantoms), (144, 144), 30),
            ),
        },
    }

    with open(args.run / "log.csv", newline="") as handle:
        history = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    curve = {
        "model": ([r["step"] for r in history], [r["cardiac_psnr"] for r in history]),
        "bicubic": ([r["step"] for r in history], [r["bicubic_cardiac_psnr"] for r in history]),
    }
    title = f"{card.training.get('preset', '')}: validation CardiacPSNR (held-out synthetic cases)"
    save_image(line_plot(curve, title, "step", "dB"), ROOT / "docs" / f"training_curve_x{scale}.png")

    metrics = dict(card.metrics)
    metrics["held_out"] = held_out
    metrics["training_curve"] = [
        {k: r[k] for k in ("step", "loss", "cardiac_psnr", "cardiac_ssim", "wall_s")} for r in history
    ]
    card = dataclasses.replace(card, metrics=metrics)
    target = default_weights_path(scale)
    atomic_write(target, lambda tmp: Path(tmp).write_bytes(weights.read_bytes()))
    atomic_write_text(card_path(target), card.to_json())
    atomic_write_text(args.run / "embedded_quality.json", json.dumps(held_out, indent=2) + "\n")
    print(f"embedded {weights} as {target}")


if __name__ == "__main__":
    main()
