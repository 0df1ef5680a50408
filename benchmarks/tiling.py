"""Tiled against untiled inference: what processing a cine in overlapping spatial tiles changes.

    python benchmarks/tiling.py                        # the demo stack and a larger phantom stack, ×4
    python benchmarks/tiling.py --margins 4 8 16 --core 16

A cine whose pass would not fit in memory runs in tiles (`Upscaler.tile_core`), each read with TILE_MARGIN LR
pixels of context on every side, only its core kept. The recurrence carries information sideways, so a tile's
edge differs from the whole-frame result; this measures by how much, for several margins, through
`Upscaler.upscale` (fp32 and bf16, the default consistency step): CardiacPSNR against the ground truth tiled and
untiled, and the PSNR of the tiled output against the untiled one. The embedded default ×4 weights; held-out phantoms.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from measure import hardware_kind, hardware_name
from results_io import write_result

from cmrvsr_fast.cardiac.roi import heart_box
from cmrvsr_fast.data import generate
from cmrvsr_fast.data.degrade import degrade
from cmrvsr_fast.evaluation.metrics import cardiac_psnr, psnr
from cmrvsr_fast.inference import upscaler as upscaler_module
from cmrvsr_fast.jobs.demo import DEMO_SEED


def stacks(scale: int) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """name -> (HR, LR, ES): the demo stack (3 × 30 × 144², as `make demo`) and a 3 × 30 × 384² phantom stack."""
    out = {}
    for name, size in (("demo 3x30x144", 144), ("phantom 3x30x384", 384)):
        phantom = generate(DEMO_SEED, (size, size), 30, 3)
        lr = np.stack([degrade(s, scale) for s in phantom.cine])
        out[name] = (phantom.cine, lr, phantom.es)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--margins", type=int, nargs="+", default=[4, 8, 16, 24])
    parser.add_argument("--core", type=int, default=16, help="LR tile core, pixels a side")
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], help="precisions to measure")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/tiling_<date>_<hardware>.json)")
    args = parser.parse_args(argv)

    rows = []
    for precision, (name, (hr, lr, es)) in ((p, item) for p in args.precision for item in stacks(4).items()):
        up = upscaler_module.load(device="cpu", precision=precision)
        box = heart_box(hr)
        whole = up.upscale(lr, ed=0, es=es, tile=0)
        whole_db = float(np.mean([cardiac_psnr(whole[s], hr[s], box) for s in range(len(hr))]))
        for margin in args.margins:
            upscaler_module.TILE_MARGIN = margin
            tiled = up.upscale(lr, ed=0, es=es, tile=args.core)
            tiled_db = float(np.mean([cardiac_psnr(tiled[s], hr[s], box) for s in range(len(hr))]))
            row = {"precision": precision, "stack": name, "lr_size": lr.shape[-1], "core": args.core, "margin": margin,
                   "cardiac_psnr_untiled": whole_db, "cardiac_psnr_tiled": tiled_db,
                   "difference_db": tiled_db - whole_db, "tiled_vs_untiled_psnr": psnr(tiled, whole),
                   "max_abs_difference": float(np.abs(tiled - whole).max())}  # fmt: skip
            rows.append(row)
            print(f"{precision} {name:<18} core {args.core} margin {margin:>2}: CardiacPSNR {tiled_db:.3f} vs "
                  f"{whole_db:.3f} "
                  f"({tiled_db - whole_db:+.3f} dB); tiled vs untiled {row['tiled_vs_untiled_psnr']:.1f} dB, "
                  f"max |diff| {row['max_abs_difference']:.2f} grey levels")  # fmt: skip
    cpu = torch.device("cpu")
    result = {"hardware": hardware_name(cpu), "weights": "default-x4", "rows": rows}
    write_result("tiling", hardware_kind(cpu), result, out=None if args.out is None else Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
