"""Reference against the Engine, eager and under torch.compile, side by side in one run, with parity errors.

    python benchmarks/bench_engine.py [--preset paper-x4 --frames 30 --size 64 --slices 1 10 --repeats 2]

Paths: reference fp32 (eager; compiled), engine fp32 and bf16 (eager; compiled), onnxruntime fp32 (the exported
ONNX graph), AOTInductor fp32 and bf16 (CPU or CUDA package); exported paths include their export in the
warm-up time. Each (slice count, path) runs in its own child process so that its peak memory is its own (CPU: peak
RSS above the process's size before the path was built; CUDA: torch.cuda.max_memory_allocated), or, with
--in-process (for a GPU, where peak memory is reset per path), all in this one. Every child
builds the same seeded model and inputs. A stack runs in passes of as many cines as fit --budget-mb (the
Upscaler's default on a CPU). Per path: latency per cine (median of the timed runs after one warm-up pass:
compiled and exported paths warm up on a full-length pass, since the reference's module inputs are views whose
strides depend on T; eager paths on 4 frames, enough to create every oneDNN primitive but the T-sized input
convolutions), FPS (output frames per second), achieved TFLOP/s against the model's cost
(cmrvsr_fast.model.cost), peak memory, and the relative L2 error against the reference eager output of the same
slice count. Writes dated JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from measure import MeasurementFailed, current_rss_mb, hardware_name, in_a_child, in_this_process, peak_rss_mb
from results_io import write_result

from cmrvsr_fast import CMRVSR, ModelConfig
from cmrvsr_fast.inference.engine import Engine, cudnn_benchmark_mode
from cmrvsr_fast.model.cost import inference_flops
from cmrvsr_fast.ops.backends import PAIRED_BACKENDS

PATHS = (
    "reference fp32",
    "reference fp32 compiled",
    "engine fp32",
    "engine fp32 compiled",
    "engine bf16",
    "engine bf16 compiled",
    "onnxruntime fp32",
    "aoti fp32",
    "aoti bf16",
)
KERNEL_BACKENDS = ("triton", "cuda", "auto")  # auto: the Upscaler's default (cmrvsr_fast.ops.backends picks)
# Engine paths with the fused kernels (GPU only; `make device-check` asks for them with --paths).
KERNEL_PATHS = tuple(f"engine {dtype} {backend}" for backend in KERNEL_BACKENDS for dtype in ("fp32", "bf16"))
# GPU only: the Engine's whole schedule captured as a CUDA graph, with each backend.
GRAPH_PATHS = (
    "engine bf16 graph",
    "engine bf16 triton graph",
    "engine bf16 cuda graph",
    "engine fp32 triton graph",
    "engine bf16 auto graph",
)  # the last: `upscale --cuda-graph` with the default backend
# The reference with cuDNN's TF32 rounding off: IEEE float32 convolutions (on a CPU the same as "reference fp32").
# PyTorch's default, TF32 on, is what "reference fp32" measures.
IEEE_PATHS = ("reference fp32 ieee",)
# GPU: the compiled PyTorch pieces paired with one Triton kernel (Engine(backend={op: "triton"})), and the compiled
# engine under a CUDA graph (the compiled engine can be ahead of the all-Triton one).
HYBRID_PATHS = (
    "engine bf16 compiled triton-step",
    "engine bf16 compiled triton-fusion",
    "engine bf16 compiled graph",
    "engine bf16 compiled triton-step graph",
    "engine bf16 compiled dynamic",  # PyTorch ops, compiled for dynamic shapes
    "engine bf16 auto compiled dynamic",  # what `upscale --compile` runs: the default backend, dynamic shapes
)
# The compiled reference: Inductor's max-autotune (GPU: minutes of autotuning, hence not in PATHS).
AUTOTUNE_PATHS = ("reference fp32 compiled max-autotune",)
# Hopper: the Triton layer op with the TMA tiles offered to its autotuner (opt-in), beside
# the same paths without them in one process (kernels/convlstm_nhwc.py: `tma_tiles_in_autotuning`).
TMA_PATHS = ("engine bf16 auto tma", "engine bf16 compiled triton-step tma")
# GPU: cuDNN timing its algorithms per convolution shape (torch.backends.cudnn.benchmark) instead of its
# heuristic's choice — for the Engine its cudnn_benchmark option, for the reference the switch around it — beside
# the same paths without it (cuDNN's convolutions are a large share of a GPU pass).
CUDNN_BENCHMARK_PATHS = (
    "reference fp32 cudnn-benchmark",
    "engine bf16 auto cudnn-benchmark",
    "engine bf16 compiled triton-step cudnn-benchmark",
)
ALL_PATHS = (PATHS + KERNEL_PATHS + GRAPH_PATHS + IEEE_PATHS + HYBRID_PATHS + AUTOTUNE_PATHS + TMA_PATHS
             + CUDNN_BENCHMARK_PATHS)  # fmt: skip
# Words of the paths that run_path times in a child process of their own even with --in-process, and why.
ISOLATED = {
    "tma": "kernels new to a GPU: a fault poisons the process's CUDA context, and every row after it",
    # PyTorch keeps cuDNN's plans per thread, keyed by shape, dtype and layout but not by the benchmark switch,
    # and looks them up first: in this process the twins' heuristic plans would be reused, nothing timed.
    "cudnn-benchmark": "cuDNN's plan cache would serve the plans its twins already chose",
}
WARMUP_FRAMES = 4
STATIC = ("onnxruntime", "aoti")  # exported with static T, H, W: they warm up on the full input


def build_runner(path: str, model: CMRVSR, lr: torch.Tensor, workdir: Path):
    """A callable (lr, phase) -> sr for one benchmark path (exported paths export first, into workdir)."""
    if path.startswith(("onnxruntime", "aoti")):
        return exported_runner(path, model, lr, workdir)
    words = path.split()
    compiled = "compiled" in words
    if path.startswith("reference"):
        if "cudnn-benchmark" in words:
            return with_cudnn_benchmark(model)
        if not compiled:
            return model
        # Compile at module granularity: the whole forward unrolls ~400 recurrent steps into one graph, which
        # takes minutes to compile; each module has a handful of static shapes.
        # max-autotune without CUDA graphs: Inductor's graphs would overwrite a cell's earlier outputs, which the
        # recurrence keeps for the fusion.
        mode = "max-autotune-no-cudagraphs" if "max-autotune" in words else None
        model = copy.deepcopy(model)
        for module in (model.in_block, *model.lstm_forward.cells, *model.lstm_backward.cells, model.refine):
            module.compile(dynamic=False, mode=mode)
        model.out_block.compile(dynamic=False, mode=mode)
        return model
    dtype = torch.bfloat16 if "bf16" in path else torch.float32
    paired = next((PAIRED_BACKENDS[w] for w in words if w in PAIRED_BACKENDS), None)
    backend = paired or next((b for b in KERNEL_BACKENDS if b in words), "torch")
    compile_mode = ("dynamic" if "dynamic" in words else True) if compiled else False
    return Engine(model, dtype=dtype, compile=compile_mode, backend=backend, cuda_graph="graph" in words,
                  cudnn_benchmark="cudnn-benchmark" in words)  # fmt: skip


def with_cudnn_benchmark(model: CMRVSR):
    """The reference with cuDNN's benchmark mode on for each call (the Engine has its own option)."""

    def run(lr: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        with cudnn_benchmark_mode(True):
            return model(lr, phase)

    return run


def exported_runner(path: str, model: CMRVSR, lr: torch.Tensor, workdir: Path):
    from cmrvsr_fast.export.runners import load_runner

    from cmrvsr_fast.model.checkpoint import ModelCard

    card = ModelCard(model.config, weights_sha256="benchmark")
    batch, frames, _, height, width = lr.shape
    if path.startswith("onnxruntime"):
        from cmrvsr_fast.export.onnx_export import export_onnx

        artifact = workdir / f"bench_{batch}.onnx"
        export_onnx(model, card, artifact, frames, height, width)
    else:
        from cmrvsr_fast.export.aoti_export import export_aoti

        artifact = workdir / f"bench_{batch}_{path.split()[-1]}.pt2"
        export_aoti(model, card, artifact, frames, height, width, batch=batch, precision=path.split()[-1],
                    device=str(lr.device))  # fmt: skip
    return load_runner(artifact)


@contextlib.contextmanager
def tma_tiles(offered: bool):
    """The TMA tiles in the Triton step's autotuning for one path (the autotuner offers them on Hopper and
    later only)."""
    if not offered:
        yield
        return
    from cmrvsr_fast.kernels.convlstm_nhwc import tma_tiles_in_autotuning

    with tma_tiles_in_autotuning():
        yield


@contextlib.contextmanager
def tf32_convolutions(allowed: bool):
    """cuDNN's TF32 switch for one path, restored after it (paths may share a process: --in-process)."""
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = allowed and saved
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved


def measure_path(spec: dict, workdir: Path) -> tuple[dict, torch.Tensor]:
    """Build and time one path in this process: (timings, output on the CPU in fp32)."""
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    model = CMRVSR(ModelConfig.from_name(spec["preset"])).to(device).eval()
    lr = torch.randn(spec["slices"], spec["frames"], 1, spec["size"], spec["size"], device=device)
    phase = torch.rand(spec["slices"], spec["frames"], device=device) * 2 - 1

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    # Stacks run in passes of as many cines as fit the Upscaler's CPU budget (4 GiB; fp32 estimate for every
    # path): in one pass, the reference on 10 paper-x4 cines took 16 GB and its compiled twin was OOM-killed.
    chunk = Engine(model, memory_budget_mb=spec["budget_mb"]).cines_per_pass(*lr.shape[1:2], *lr.shape[3:])
    rss_before = current_rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    words = spec["path"].split()
    offers_tma = "tma" in words and device.type == "cuda"  # on the CPU the paths run PyTorch ops
    with torch.no_grad(), tf32_convolutions(not spec["path"].endswith(" ieee")), tma_tiles(offers_tma):
        start = time.perf_counter()
        one_pass = build_runner(spec["path"], model, lr[:chunk], workdir)

        def run(lr: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
            return torch.cat([one_pass(lr[i : i + chunk], phase[i : i + chunk]) for i in range(0, len(lr), chunk)])

        # A graph is captured for the shape it first sees; cuDNN's benchmark mode times algorithms per shape.
        full_length_warmup = (spec["path"].startswith(STATIC)
                              or {"compiled", "graph", "cudnn-benchmark"} & set(words))  # fmt: skip
        warm = None if full_length_warmup else WARMUP_FRAMES
        run(lr[:chunk, :warm], phase[:chunk, :warm])
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
    return {"times": times, "warmup_s": warmup_s, "peak_memory_mb": peak, "cines_per_pass": chunk}, out.float().cpu()


def worker(spec: dict) -> None:
    """Run one path in this (child) process and write its timings (JSON) and output (tensor) where `spec` says."""
    result, out = measure_path(spec, Path(spec["output"]).parent)
    torch.save(out, spec["output"])
    Path(spec["result"]).write_text(json.dumps(result))


def run_path(spec: dict, workdir: Path, in_process: bool = False) -> tuple[dict, torch.Tensor]:
    """Time one path, in this process (`in_process`) or a child; the paths with an ISOLATED word always in a
    child."""
    if in_process and not set(ISOLATED) & set(spec["path"].split()):
        return in_this_process(measure_path, spec, workdir)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the child's memory beside what this process keeps cached
    stem = f"{spec['slices']}_{spec['path'].replace(' ', '_')}"
    spec = {**spec, "output": str(workdir / f"{stem}.pt"), "result": str(workdir / f"{stem}.json")}
    in_a_child(__file__, spec)
    return json.loads(Path(spec["result"]).read_text()), torch.load(spec["output"], weights_only=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper-x4")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--size", type=int, default=64, help="LR height and width")
    parser.add_argument("--slices", type=int, nargs="+", default=[1, 10], help="slice counts (cines per stack)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per path, one slice (median reported)")
    parser.add_argument("--stack-repeats", type=int, default=1, help="timed runs per path for a stack")
    parser.add_argument("--stack-aoti", action="store_true", help="also time AOTI packages on the stacks")
    parser.add_argument("--budget-mb", type=float, default=4096, help="memory budget per pass over a stack")
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=ALL_PATHS,
                        metavar="PATH")  # fmt: skip
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--in-process", action="store_true",
                        help="every path in this process (GPU: saves a Python and CUDA start per path; peak memory "
                             "is still per path through torch.cuda.reset_peak_memory_stats)")  # fmt: skip
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    paths = ["reference fp32", *[p for p in args.paths if p != "reference fp32"]]  # the parity baseline first

    device = torch.device(args.device)
    config = ModelConfig.from_name(args.preset)
    rows: list[dict] = []
    result = {
        "benchmark": "bench_engine",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "hardware": hardware_name(device),
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "config": {
            "preset": args.preset,
            "frames": args.frames,
            "lr_size": args.size,
            "repeats": args.repeats,
            "stack_repeats": args.stack_repeats,
            "budget_mb": args.budget_mb,
        },
        "cine_tflop": round(inference_flops(config, args.frames, args.size, args.size) / 1e12, 4),
        "peak_memory_meaning": "CUDA max_memory_allocated"
        if device.type == "cuda"
        else "peak RSS above the process size before the path was built (MB)",
        "rows": rows,
        "failed": [],
        "complete": False,
    }
    kind = "cuda" if device.type == "cuda" else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        for slices in args.slices:
            flops = slices * inference_flops(config, args.frames, args.size, args.size)
            reference = None
            for path in paths:
                if slices > 1 and path.startswith("aoti") and not args.stack_aoti:
                    continue  # every batch size is another multi-minute AOTInductor compilation on a CPU
                spec = {"preset": args.preset, "frames": args.frames, "size": args.size, "slices": slices,
                        "repeats": args.repeats if slices == 1 else args.stack_repeats, "device": args.device,
                        "path": path, "budget_mb": args.budget_mb}  # fmt: skip
                try:
                    timing, out = run_path(spec, Path(tmp), args.in_process)
                except MeasurementFailed as failure:
                    result["failed"].append({"slices": slices, "path": path, "error": str(failure)})
                    print(f"{slices:>2} × {path:>24}: FAILED {str(failure)[-400:]}", flush=True)
                    write_result("bench_engine", kind, result, args.out, quiet=True)
                    continue
                if path == "reference fp32":
                    reference = out  # the parity baseline (None when its own worker failed)
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
                    "cines_per_pass": timing["cines_per_pass"],
                    "relative_l2": None if reference is None else float((out - reference).norm() / reference.norm()),
                    "all_latencies_s": [round(t, 4) for t in timing["times"]],
                }
                row["speedup_vs_reference"] = round(rows_base(rows, slices, row) / latency, 3)
                rows.append(row)
                error = float("nan") if row["relative_l2"] is None else row["relative_l2"]
                print(f"{slices:>2} × {path:>24}: {row['latency_per_cine_s']:8.3f} s/cine {row['fps']:7.2f} FPS "
                      f"{row['tflops']:.3f} TFLOP/s  {row['speedup_vs_reference']:5.2f}×  "
                      f"peak {row['peak_memory_mb']:8.1f} MB  rel-L2 {error:.1e}", flush=True)  # fmt: skip
                # After every row: a run stopped at a time limit (the device check) keeps what it measured.
                write_result("bench_engine", kind, result, args.out, quiet=True)
    result["complete"] = True
    write_result("bench_engine", kind, result, args.out)
    if result["failed"]:
        raise SystemExit(f"{len(result['failed'])} path(s) failed: " + ", ".join(
            f"{f['slices']} × {f['path']}" for f in result["failed"]))  # fmt: skip


def rows_base(rows: list[dict], slices: int, row: dict) -> float:
    """The reference eager latency for this slice count (the row itself when it is the reference)."""
    for earlier in rows:
        if earlier["slices"] == slices and earlier["path"] == "reference fp32":
            return earlier["latency_s"]
    return row["latency_s"]


if __name__ == "__main__":
    main()
