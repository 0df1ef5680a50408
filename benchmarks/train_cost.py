"""Training cost of a preset on this machine: seconds per optimisation step of the recipe of docs/model.md.

One step = forward of a batch of clips (7 centre frames + n cyclic warm-up frames each side, 32×32 LR crops),
the deep-supervision loss, backward and an Adam update. Reports the median over several steps after warm-up,
steps per two hours, and writes dated JSON under benchmarks/results/.

    python benchmarks/train_cost.py --preset lite-x4 --preset paper-x4 --steps 3

glibc's allocator matters here: the schedule frees and reallocates the same large activations thousands of
times per step, and by default blocks above the mmap threshold go back to the kernel and come back as fresh
zeroed pages. Like `cmrvsr-fast train`, this script keeps them in the process (cmrvsr_fast/training/allocator.py,
recorded in the JSON); --default-allocator measures without.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from results_io import write_result

from cmrvsr_fast import CMRVSR, ModelConfig, deep_supervision_loss
from cmrvsr_fast.training.allocator import keep_freed_memory


def step_seconds(config: ModelConfig, batch: int, clip: int, crop: int, steps: int) -> list[float]:
    model = CMRVSR(config).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    # The model builds the warm-up itself from the clip; the public dataset takes the warm-up from the
    # neighbouring frames instead, which costs the same.
    lr = torch.randn(batch, clip, 1, crop, crop)
    phase = torch.rand(batch, clip) * 2 - 1
    target = torch.randn(batch, clip, 1, crop * config.scale, crop * config.scale)
    times = []
    for _ in range(steps + 1):  # the first step warms up allocators and kernels and is not counted
        start = time.perf_counter()
        loss = deep_supervision_loss(model(lr, phase), target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        times.append(time.perf_counter() - start)
    return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", action="append", help="preset name (repeatable); default lite-x4")
    parser.add_argument("--config", action="append", default=[], help="a ModelConfig as JSON (repeatable)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--clip", type=int, default=7)
    parser.add_argument("--crop", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: dated file in results/)")
    parser.add_argument("--default-allocator", action="store_true", help="leave glibc's allocator as it starts")
    args = parser.parse_args()
    allocator_kept = False if args.default_allocator else keep_freed_memory()

    configs = {name: ModelConfig.from_name(name) for name in (args.preset or ([] if args.config else ["lite-x4"]))}
    configs |= {text: ModelConfig.from_dict(json.loads(text)) for text in args.config}
    rows = []
    for name, config in configs.items():
        times = step_seconds(config, args.batch, args.clip, args.crop, args.steps)
        median = statistics.median(times)
        row = {
            "model": name,
            "config": config.to_dict(),
            "parameters": sum(p.numel() for p in CMRVSR(config).parameters()),
            "seconds_per_step": round(median, 3),
            "steps_per_2h": int(7200 / median),
            "all_step_seconds": [round(t, 3) for t in times],
        }
        rows.append(row)
        print(
            f"{name:>10}: {row['parameters']:>9,} parameters, {median:7.2f} s/step, {row['steps_per_2h']:>6} steps/2 h"
        )

    result = {
        "benchmark": "train_cost",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "hardware": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()},
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        "keep_freed_memory": allocator_kept,
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "recipe": {"batch": args.batch, "clip_frames": args.clip, "lr_crop": args.crop, "optimiser": "Adam 1e-4"},
        "rows": rows,
    }
    write_result("train_cost", "cpu", result, args.out)


if __name__ == "__main__":
    main()
