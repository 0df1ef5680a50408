"""Reference against the Engine, eager and under torch.compile, side by side in one run, with parity errors.

    python benchmarks/bench_engine.py [--preset paper-x4 --frames 30 --size 64 --slices 1 10 --repeats 2]

Paths: reference fp32 (eager; compiled), engine fp32 and bf16 (eager; compiled). Each (slice count, path) runs in
its own child process so that its peak memory is its own (CPU: peak RSS above the process's size before the path
was built; CUDA: torch.cuda.max_memory_allocated). Every child builds the same seeded model and inputs. Per path:
latency per cine (median of repeats after one warm-up run: compiled paths warm up on the full input, since the
reference's module inputs are views whose strides depend on T; eager paths on a 4-frame cine of the same batch
and size, enough to create every oneDNN primitive but the T-sized input convolutions), FPS (output frames per second),
achieved TFLOP/s against the SPEC §6 cost, peak memory, and the relative L2 error against the reference eager
output of the same slice count. Writes dated JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from results_io import write_result

from cmrvsr_fast import CMRVSR, ModelConfig
from cmrvsr_fast.cost import inference_flops
from cmrvsr_fast.engine import Engine

PATHS = (
    "reference fp32",
    "reference fp32 compiled",
    "engine fp32",
    "engine fp32 compiled",
    "engine bf16",
    "engine bf16 compiled",
)
WARMUP_FRAMES = 4


def current_rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def build_runner(path: str, model: CMRVSR):
    """A callable (lr, phase) -> sr for one benchmark path."""
    compiled = path.endswith("compiled")
    if path.startswith("reference"):
        if not compiled:
            return model
        # Compile at module granularity: the whole forward unrolls ~400 recurrent steps into one graph, which
        # takes minutes to compile; each module has a handful of static shapes.
        model = copy.deepcopy(model)
        for module in (model.in_block, *model.lstm_forward.cells, *model.lstm_backward.cells, model.refine):
            module.compile(dynamic=False)
        model.out_block.compile(dynamic=False)
        return model
    dtype = torch.bfloat16 if "bf16" in path else torch.float32
    return Engine(model, dtype=dtype, compile=compiled)


def worker(spec: dict) -> None:
    """Run one path in this process and write its timings (JSON) and output (tensor) where `spec` says."""
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    model = CMRVSR(ModelConfig.from_name(spec["preset"])).to(device).eval()
    lr = torch.randn(spec["slices"], spec["frames"], 1, spec["size"], spec["size"], device=device)
    phase = torch.rand(spec["slices"], spec["frames"], device=device) * 2 - 1

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    rss_before = current_rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        start = time.perf_counter()
        run = build_runner(spec["path"], model)
        warm = None if spec["path"].endswith("compiled") else WARMUP_FRAMES
        run(lr[:, :warm], phase[:, :warm])
        sync()
        warmup_s = time.perf_counter() - start
        times = []
        for _ in range(spec["repeats"]):
            sync()
            start = time.perf_counter()
            out = run(lr, phase)
            sync()
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else peak_rss_mb() - rss_before
    torch.save(out.float().cpu(), spec["output"])
    Path(spec["result"]).write_text(json.dumps({"times": times, "warmup_s": warmup_s, "peak_memory_mb": peak}))


def run_path(spec: dict, workdir: Path) -> tuple[dict, torch.Tensor]:
    stem = f"{spec['slices']}_{spec['path'].replace(' ', '_')}"
    spec = {**spec, "output": str(workdir / f"{stem}.pt"), "result": str(workdir / f"{stem}.json")}
    subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], check=True)
    return json.loads(Path(spec["result"]).read_text()), torch.load(spec["output"], weights_only=True)


def hardware_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper-x4")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--size", type=int, default=64, help="LR height and width")
    parser.add_argument("--slices", type=int, nargs="+", default=[1, 10], help="slice counts (cines per stack)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per path (median reported)")
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS, metavar="PATH")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    paths = ["reference fp32", *[p for p in args.paths if p != "reference fp32"]]  # the parity baseline first

    device = torch.device(args.device)
    config = ModelConfig.from_name(args.preset)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for slices in args.slices:
            flops = slices * inference_flops(config, args.frames, args.size, args.size)
            reference = None
            for path in paths:
                spec = {"preset": args.preset, "frames": args.frames, "size": args.size, "slices": slices,
                        "repeats": args.repeats, "device": args.device, "path": path}  # fmt: skip
                timing, out = run_path(spec, Path(tmp))
                reference = out if reference is None else reference
                latency = statistics.median(timing["times"])
                row = {
                    "slices": slices,
                    "path": path,
                    "latency_s": round(latency, 4),
                    "latency_per_cine_s": round(latency / slices, 4),
                    "fps": round(slices * args.frames / latency, 3),
                    "tflops": round(flops / latency / 1e12, 4),
                    "peak_memory_mb": round(timing["peak_memory_mb"], 1),
                    "warmup_s": round(timing["warmup_s"], 2),
                    "relative_l2": float((out - reference).norm() / reference.norm()),
                    "all_latencies_s": [round(t, 4) for t in timing["times"]],
                }
                row["speedup_vs_reference"] = round(rows_base(rows, slices, row) / latency, 3)
                rows.append(row)
                print(f"{slices:>2} × {path:>24}: {row['latency_per_cine_s']:8.3f} s/cine {row['fps']:7.2f} FPS "
                      f"{row['tflops']:.3f} TFLOP/s  {row['speedup_vs_reference']:5.2f}×  "
                      f"peak {row['peak_memory_mb']:8.1f} MB  rel-L2 {row['relative_l2']:.1e}", flush=True)  # fmt: skip
    result = {
        "benchmark": "bench_engine",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "hardware": hardware_name(device),
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "config": {"preset": args.preset, "frames": args.frames, "lr_size": args.size, "repeats": args.repeats},
        "cine_tflop": round(inference_flops(config, args.frames, args.size, args.size) / 1e12, 4),
        "peak_memory_meaning": "CUDA max_memory_allocated"
        if device.type == "cuda"
        else "peak RSS above the process size before the path was built (MB)",
        "rows": rows,
    }
    write_result("bench_engine", "cuda" if device.type == "cuda" else "cpu", result, args.out)


def rows_base(rows: list[dict], slices: int, row: dict) -> float:
    """The reference eager latency for this slice count (the row itself when it is the reference)."""
    for earlier in rows:
        if earlier["slices"] == slices and earlier["path"] == "reference fp32":
            return earlier["latency_s"]
    return row["latency_s"]


if __name__ == "__main__":
    main()
