"""Where a pass spends its device time: torch.profiler over one warm pass per path, kernels ranked by self time.

    python benchmarks/profile_engine.py [--paths "reference fp32" "engine bf16" ...] [--slices 10] [--out F.json]

The model benchmarks (bench_engine.py) say how fast each path is; this says why. Per path: the wall time of the
profiled pass, the summed device time of its kernels (their ratio is how busy the GPU was: well under 1 means
launch-bound), and the top kernels with their share. On a CPU the same table ranks operators by self CPU time
(the rehearsal of `make device-check`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from bench_engine import ALL_PATHS, build_runner
from results_io import write_result
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from cmrvsr_fast import CMRVSR, ModelConfig

DEFAULT_PATHS = ("reference fp32", "engine bf16", "engine bf16 triton")


def self_time_us(event, on_gpu: bool) -> float:
    """An aggregated event's own time on the device (GPU) or the CPU, in µs (names differ across torch versions)."""
    names = ("self_device_time_total", "self_cuda_time_total") if on_gpu else ("self_cpu_time_total",)
    return next((float(getattr(event, name)) for name in names if hasattr(event, name)), 0.0)


def profile_path(path: str, config: ModelConfig, args: argparse.Namespace, device: torch.device, top: int) -> dict:
    torch.manual_seed(0)
    model = CMRVSR(config).to(device).eval()
    lr = torch.randn(args.slices, args.frames, 1, args.size, args.size, device=device)
    phase = torch.rand(args.slices, args.frames, device=device) * 2 - 1
    on_gpu = device.type == "cuda"

    def sync() -> None:
        if on_gpu:
            torch.cuda.synchronize()

    with torch.no_grad():
        runner = build_runner(path, model, lr, Path(args.workdir))
        runner(lr, phase)  # warm-up at the profiled shape: compilation, autotuning and graph capture stay out
        sync()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
        with profile(activities=activities) as prof:
            start = time.perf_counter()
            runner(lr, phase)
            sync()
            wall_s = time.perf_counter() - start
    # On a GPU only the kernels' own entries count (an operator's self device time repeats its kernels' time).
    wanted = DeviceType.CUDA if on_gpu else DeviceType.CPU
    events = [(e.key, self_time_us(e, on_gpu), e.count) for e in prof.key_averages() if e.device_type == wanted]
    events = sorted((e for e in events if e[1] > 0), key=lambda e: -e[1])
    total_us = sum(e[1] for e in events)
    rows = [{"name": name[:160], "self_ms": round(us / 1e3, 3), "share": round(us / total_us, 4), "calls": count}
            for name, us, count in events[:top]]  # fmt: skip
    busy = total_us / 1e6 / wall_s
    print(f"\n{path}: pass {wall_s * 1e3:.1f} ms, {'kernel' if on_gpu else 'operator'} time {total_us / 1e3:.1f} ms "
          f"({busy:.0%} of the pass)")  # fmt: skip
    for row in rows:
        print(f"  {row['share']:6.1%} {row['self_ms']:9.2f} ms {row['calls']:6d}×  {row['name'][:110]}")
    return {"path": path, "pass_s": round(wall_s, 4), "device_time_s": round(total_us / 1e6, 4),
            "busy_fraction": round(busy, 3), "top": rows}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper-x4")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--slices", type=int, default=10)
    parser.add_argument("--paths", nargs="+", default=list(DEFAULT_PATHS), choices=ALL_PATHS,
                        metavar="PATH")  # fmt: skip
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workdir", default="/tmp", help="where exported paths put their artifacts")
    parser.add_argument("--out", type=Path)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    device = torch.device(args.device)
    config = ModelConfig.from_name(args.preset)
    result = {"benchmark": "profile_engine", "preset": args.preset, "frames": args.frames, "lr_size": args.size,
              "slices": args.slices, "device": str(device), "paths": []}  # fmt: skip
    for path in args.paths:
        result["paths"].append(profile_path(path, config, args, device, args.top))
        write_result("profile_engine", "cuda" if device.type == "cuda" else "cpu", result, args.out, quiet=True)
    write_result("profile_engine", "cuda" if device.type == "cuda" else "cpu", result, args.out)


if __name__ == "__main__":
    main()
