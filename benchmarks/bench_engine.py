"""Reference eager fp32 against the Engine (fp32, bf16), side by side in one process, with parity errors.

    python benchmarks/bench_engine.py [--frames 30 --size 64 --slices 1 --repeats 2 --compile]

Reports per path: latency per cine (median of repeats after one warm-up), FPS (output frames per second),
achieved TFLOP/s against the SPEC §6 cost of the cine, peak memory (CUDA) and the relative L2 error against the
reference output of the same run; writes dated JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import time
from pathlib import Path

import torch
from results_io import write_result

from cmrvsr_fast import CMRVSR, ModelConfig
from cmrvsr_fast.cost import inference_flops
from cmrvsr_fast.engine import Engine


def timed(run, repeats: int, device: torch.device) -> tuple[list[float], torch.Tensor]:
    out = run()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper-x4")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--size", type=int, default=64, help="LR height and width")
    parser.add_argument("--slices", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also time the engines under torch.compile")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    config = ModelConfig.from_name(args.preset)
    model = CMRVSR(config).to(device).eval()
    lr = torch.randn(args.slices, args.frames, 1, args.size, args.size, device=device)
    phase = torch.rand(args.slices, args.frames, device=device) * 2 - 1
    flops = args.slices * inference_flops(config, args.frames, args.size, args.size)

    paths = {"reference eager fp32": lambda: model(lr, phase)}
    for label, dtype in (("engine fp32", torch.float32), ("engine bf16", torch.bfloat16)):
        engine = Engine(model, dtype=dtype)
        paths[label] = lambda e=engine: e(lr, phase)
        if args.compile:
            compiled = Engine(model, dtype=dtype, compile=True)
            paths[f"{label} compiled"] = lambda e=compiled: e(lr, phase)

    rows, reference = [], None
    with torch.no_grad():
        for label, run in paths.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            times, out = timed(run, args.repeats, device)
            latency = statistics.median(times)
            reference = out.float() if reference is None else reference
            rows.append(
                {
                    "path": label,
                    "latency_s": round(latency, 4),
                    "fps": round(args.slices * args.frames / latency, 3),
                    "tflops": round(flops / latency / 1e12, 4),
                    "peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)
                    if device.type == "cuda"
                    else None,
                    "relative_l2": float((out.float() - reference).norm() / reference.norm()),
                    "all_latencies_s": [round(t, 4) for t in times],
                }
            )
            print(f"{label:>28}: {latency:8.3f} s/cine  {rows[-1]['fps']:8.2f} FPS  {rows[-1]['tflops']:.4f} TFLOP/s"
                  f"  rel-L2 {rows[-1]['relative_l2']:.2e}")  # fmt: skip
    base = rows[0]["latency_s"]
    for row in rows:
        row["speedup_vs_reference"] = round(base / row["latency_s"], 3)
        print(f"{row['path']:>28}: {row['speedup_vs_reference']:.2f}× the reference")
    result = {
        "benchmark": "bench_engine",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "hardware": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.machine()} CPU, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}",
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "config": {"preset": args.preset, "frames": args.frames, "lr_size": args.size, "slices": args.slices},
        "cine_tflop": round(flops / 1e12, 4),
        "rows": rows,
    }
    write_result("bench_engine", "cuda" if device.type == "cuda" else "cpu", result, args.out)


if __name__ == "__main__":
    main()
