"""Wall time of a user's job per preset: `Upscaler.upscale` on a 10-slice, 30-frame, 64×64 stack, ×4.

    python benchmarks/preset_speed.py                          # lite-x4 (the default's preset) and paper-x4
    python benchmarks/preset_speed.py --preset lite-x4 --repeats 3

The embedded default's preset must upscale this stack in at most 60 s on the 2-core CPU: the budget that rules
presets in or out before their quality is weighed (docs/quality.md). Weights do not change the cost, so presets
without trained weights here are timed with their initial weights. Each preset is timed through the public API
(precision "auto", the default consistency step included) after one warm-up pass; the median is reported.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from measure import hardware_kind, hardware_name
from results_io import write_result

from cmrvsr_fast import CMRVSR, ModelCard, ModelConfig
from cmrvsr_fast.data import generate
from cmrvsr_fast.inference.upscaler import Upscaler, default_weights_path, load

BUDGET_S = 60.0


def upscaler_for(preset: str) -> Upscaler:
    default = load(default_weights_path(4), device="cpu")
    if ModelConfig.from_name(preset) == default.model.config:
        return default
    config = ModelConfig.from_name(preset)
    card = ModelCard(config, normalisation=default.card.normalisation)
    return Upscaler.from_model(CMRVSR(config), card, torch.device("cpu"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", action="append", help="presets to time (default: lite-x4 and paper-x4)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per preset after the warm-up")
    parser.add_argument("--slices", type=int, default=10)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--size", type=int, default=64, help="LR matrix")
    args = parser.parse_args(argv)
    stack = generate(0, (args.size, args.size), args.frames, slices=args.slices).cine
    rows = []
    for preset in args.preset or ["lite-x4", "paper-x4"]:
        upscaler = upscaler_for(preset)
        upscaler.upscale(stack[:1, :8])  # warm-up: allocations, one-time dispatch
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            out = upscaler.upscale(stack)
            times.append(time.perf_counter() - start)
        assert np.isfinite(out).all()
        median = statistics.median(times)
        rows.append({"preset": preset, "precision": upscaler.precision, "seconds": times, "median_s": median,
                     "within_budget": median <= BUDGET_S})  # fmt: skip
        print(f"{preset:<10} {upscaler.precision:<5} {median:7.1f} s  {'within' if median <= BUDGET_S else 'OVER'} "
              f"the {BUDGET_S:.0f} s budget")  # fmt: skip
    device = torch.device("cpu")
    write_result("preset_speed", hardware_kind(device), {
        "stack": {"slices": args.slices, "frames": args.frames, "lr": args.size, "scale": 4},
        "hardware": hardware_name(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "budget_s": BUDGET_S, "rows": rows,
    })  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
