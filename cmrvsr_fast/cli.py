"""`cmrvsr-fast`: the command line, a thin shell over the Python API.

Exit codes: 0 done; 2 bad input or usage (the message names the file or option and the reason).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .atomic import atomic_write, atomic_write_text
from .checkpoint import NORMALISATION, load_checkpoint
from .config import PRESETS, ModelConfig
from .data.datasets import phantom_records
from .data.phantom import generate
from .data.readers import CineRecord, DataError, read_acdc, read_dsb, read_folder
from .evaluate import evaluate, format_table
from .model import CMRVSR
from .viz import montage, save_png

EXIT_OK, EXIT_BAD_INPUT = 0, 2
HELD_OUT_PHANTOM_SEEDS = 1_000_000  # phantoms from here on are never used for training


class UsageError(ValueError):
    """Bad arguments or input: reported in one line, exit code 2."""


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA device is visible to torch")
    return name


def load_records(spec: str, size: int, frames: int, limit: int | None) -> list[CineRecord]:
    """--data: phantom[:N] | acdc:PATH | dsb:PATH | folder:PATH."""
    kind, _, where = spec.partition(":")
    if kind == "phantom":
        count = int(where) if where else 4
        return phantom_records(range(HELD_OUT_PHANTOM_SEEDS, HELD_OUT_PHANTOM_SEEDS + count), (size, size), frames)
    readers = {"acdc": read_acdc, "dsb": read_dsb, "folder": read_folder}
    if kind not in readers or not where:
        raise UsageError(f"--data {spec!r}: expected phantom[:N], acdc:PATH, dsb:PATH or folder:PATH")
    if not Path(where).is_dir():
        raise UsageError(f"--data {spec!r}: {where} is not a folder")
    records = readers[kind](where)
    return records[:limit] if limit else records


def model_chooser(args: argparse.Namespace):
    """For each scale: (label, model, normalisation) from --weights or --preset, or None (bicubic only)."""
    if args.weights:
        model, card = load_checkpoint(args.weights)
        label = Path(args.weights).stem

        def from_weights(scale: int):
            if scale != card.config.scale:
                raise UsageError(f"--weights {args.weights} is a ×{card.config.scale} model; asked for ×{scale}")
            return label, model, card.normalisation

        return from_weights
    if args.preset:

        def from_preset(scale: int):
            name = args.preset if args.preset in PRESETS else f"{args.preset}-x{scale}"
            if name not in PRESETS:
                raise UsageError(f"--preset {args.preset}: no preset {name!r} (choose from {sorted(PRESETS)})")
            config = ModelConfig.from_name(name)
            if config.scale != scale:
                raise UsageError(f"--preset {name} is a ×{config.scale} model; asked for ×{scale}")
            torch.manual_seed(0)
            return f"{name} (untrained)", CMRVSR(config), NORMALISATION["acdc"]

        return from_preset
    return lambda scale: None


def run_eval(args: argparse.Namespace) -> int:
    records = load_records(args.data, args.size, args.frames, args.limit)
    chooser = model_chooser(args)
    rows = evaluate(records, args.scale, chooser, args.ssim, resolve_device(args.device), progress=not args.quiet)
    print(format_table(rows))
    if args.json:
        body = {
            "command": "eval",
            "version": __version__,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "data": args.data,
            "ssim_variant": args.ssim,
            "rows": [r.as_dict() for r in rows],
        }
        atomic_write_text(args.json, json.dumps(body, indent=2) + "\n")
    return EXIT_OK


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a handle, because np.save would append ".npy" to a temporary name
        np.save(handle, array)


def run_phantom(args: argparse.Namespace) -> int:
    """Write phantom stacks as (S, T, H, W) .npy cines with a JSON sidecar (ED, ES, heart box) and a picture."""
    out = Path(args.out)
    names = [f"phantom{seed:05d}" for seed in range(args.seed, args.seed + args.count)]
    clashes = [
        str(out / f"{n}{ext}") for n in names for ext in (".npy", ".json", ".png") if (out / f"{n}{ext}").exists()
    ]
    if clashes and not args.overwrite:
        raise UsageError(f"{clashes[0]} exists (use --overwrite to replace it)")
    for seed, name in zip(range(args.seed, args.seed + args.count), names, strict=True):
        p = generate(seed, (args.size, args.size), args.frames, args.slices)
        atomic_write(out / f"{name}.npy", lambda tmp, cine=p.cine: _save_npy(tmp, cine))
        sidecar = {"seed": seed, "ed": p.ed, "es": p.es, "heart_box": list(p.heart_box), "shape": list(p.cine.shape)}
        atomic_write_text(out / f"{name}.json", json.dumps(sidecar, indent=2) + "\n")
        frames = sorted({0, p.es // 2, p.es, (p.es + args.frames) // 2})
        save_png(montage([[stack[t] for t in frames] for stack in p.cine]), out / f"{name}.png")
        print(f"{out / name}.npy: {args.slices}×{args.frames}×{args.size}×{args.size}, ED 0, ES {p.es}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cmrvsr-fast", description="Phase-aware super-resolution of cardiac MRI cines"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    ev = commands.add_parser("eval", help="Table-1-style scores of bicubic and a model over a dataset")
    ev.add_argument("--data", default="phantom", help="phantom[:N] (held-out seeds), acdc:PATH, dsb:PATH, folder:PATH")
    ev.add_argument("--scale", type=int, nargs="+", default=[4], choices=[2, 3, 4])
    source = ev.add_mutually_exclusive_group()
    source.add_argument("--weights", help="a .safetensors checkpoint (with its card beside it)")
    source.add_argument("--preset", help="an untrained preset (paper-x4, lite-x4, or 'paper' for every scale)")
    ev.add_argument("--ssim", default="paper", choices=["paper", "standard"], help="SSIM window (default: paper's)")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ev.add_argument("--size", type=int, default=128, help="phantom image size (HR pixels)")
    ev.add_argument("--frames", type=int, default=30, help="phantom frames per cine")
    ev.add_argument("--limit", type=int, help="evaluate at most this many records")
    ev.add_argument("--json", type=Path, help="also write the table as JSON here")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(run=run_eval)

    ph = commands.add_parser("phantom", help="write phantom cines (.npy + JSON sidecar + PNG picture)")
    ph.add_argument("out", help="output folder (created)")
    ph.add_argument("--seed", type=int, default=0)
    ph.add_argument("--count", type=int, default=1)
    ph.add_argument("--size", type=int, default=256)
    ph.add_argument("--frames", type=int, default=30)
    ph.add_argument("--slices", type=int, default=1)
    ph.add_argument("--overwrite", action="store_true", help="replace existing files of the same names")
    ph.set_defaults(run=run_phantom)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (UsageError, DataError, FileNotFoundError, ValueError) as error:  # bad input, named in the message
        print(f"cmrvsr-fast {args.command}: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
