"""FPS against parameters for the comparison zoo (the paper's Fig. 4a), measured on this machine.

    python benchmarks/fps_vs_params.py [--members NAME ...] [--frames 30 --size 64 --repeats N]
                                       [--path auto] [--precision fp32] [--quality JSON] [--out JSON]

For each zoo member, in its own child process: parameters; FLOPs per output frame (counted by
torch.utils.flop_counter on the member's own forward at 16×16 LR and scaled to --size, exact for convolutions;
bicubic's interpolation by its formula); latency per --frames-frame cine at --size² LR (median of --repeats timed
runs after one full-length warm-up run) and FPS (output frames per second); peak memory (CPU: peak RSS above the
process's size before the runner was built; CUDA: torch.cuda.max_memory_allocated). The path (--path auto): on
a GPU the Engine with the best kernel backend for the CMRVSR members it supports, the model under torch.compile
otherwise; on a CPU the eager models in fp32, close to the fastest fp32 path there (the compiled reference, whose
compilation per model would cost more than it saves; the stack benchmark's CPU results under benchmarks/results/
have the figures). Quality (CardiacPSNR/SSIM on held-out phantoms) comes from the newest committed
equal-budget training result (benchmarks/zoo_train.py) where the member was trained. Writes dated JSON and the
Fig. 4a-style PNG under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from measure import (
    MeasurementFailed,
    current_rss_mb,
    hardware_kind,
    hardware_name,
    in_a_child,
    in_this_process,
    peak_rss_mb,
)
from results_io import RESULTS, write_result

from cmrvsr_fast.inference.engine import Engine, unsupported_reason
from cmrvsr_fast.model import zoo
from cmrvsr_fast.model.baselines import BaselineConfig
from cmrvsr_fast.model.cost import counted_flops_per_frame

PATHS = ("auto", "eager", "compiled", "engine", "engine-compiled")


def compile_model(model: torch.nn.Module) -> torch.nn.Module:
    """torch.compile at module granularity for the recurrent CMRVSR (its whole forward unrolls hundreds of steps;
    benchmarks/bench_engine.py), whole for the baselines."""
    if isinstance(model.config, BaselineConfig):
        return torch.compile(model, dynamic=False)
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.PReLU)) or type(module).__name__ == "ConvLSTMCell":
            module.compile(dynamic=False)
    return model


def build_runner(model: torch.nn.Module, path: str, precision: str, device: torch.device):
    """(callable (lr, phase) -> sr, the path it takes)."""
    config = model.config
    if path == "auto":
        engine_ok = not isinstance(config, BaselineConfig) and unsupported_reason(config) is None
        # On a GPU the Engine with its best kernel backend (the fused Triton / CUDA ops; no torch.compile, whose
        # minutes of compilation per member would not fit the device check), the models compiled otherwise.
        path = ("engine" if engine_ok else "compiled") if device.type == "cuda" else "eager"
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if path.startswith("engine"):
        if isinstance(config, BaselineConfig) or unsupported_reason(config):
            path = "compiled" if path == "engine-compiled" else "eager"
        else:
            backend = "auto" if device.type == "cuda" else "torch"
            engine = Engine(model, dtype=dtype, compile=path.endswith("compiled"), backend=backend)
            return engine, f"{path} ({engine.backend}, {precision})"
    runner = compile_model(model) if path == "compiled" else model
    if dtype == torch.float32:
        return runner, f"{path} (fp32)"

    def autocast_runner(lr: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype):
            return runner(lr, phase).float()

    return autocast_runner, f"{path} (autocast {precision})"


def measure_member(spec: dict) -> dict:
    """Measure one member in this process: its row."""
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    config = zoo.config_for(spec["name"])
    model = zoo.build_model(config).eval()
    flops = counted_flops_per_frame(model, config, spec["frames"], spec["size"])
    model = model.to(device)
    lr = torch.randn(1, spec["frames"], 1, spec["size"], spec["size"], device=device)
    phase = torch.rand(1, spec["frames"], device=device) * 2 - 1

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    rss_before = current_rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        start = time.perf_counter()
        runner, path = build_runner(model, spec["path"], spec["precision"], device)
        runner(lr, phase)
        sync()
        warmup_s = time.perf_counter() - start
        times = []
        for _ in range(spec["repeats"]):
            start = time.perf_counter()
            runner(lr, phase)
            sync()
            times.append(time.perf_counter() - start)
    # statm and ru_maxrss count pages a little differently: a member that allocates nothing may read −0.1 MB.
    rss_peak = max(0.0, peak_rss_mb() - rss_before)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else rss_peak
    latency = statistics.median(times)
    row = {
        "name": spec["name"],
        "family": zoo.family(config),
        "scale": config.scale,
        "config": config.to_dict(),
        "parameters": zoo.parameter_count(model),
        "gflops_per_frame": round(flops / 1e9, 4),
        "path": path,
        "latency_s_per_cine": round(latency, 6),
        "fps": round(spec["frames"] / latency, 2),
        "all_times_s": [round(t, 6) for t in times],
        "warmup_s": round(warmup_s, 2),
        "peak_memory_mb": round(peak, 1),
    }
    return row


def worker(spec: dict) -> None:
    """Measure one member in this (child) process and write its row (JSON) where `spec` says."""
    Path(spec["result"]).write_text(json.dumps(measure_member(spec)))


def measure(spec: dict, workdir: Path, in_process: bool = False) -> dict:
    if in_process:  # a GPU: peak memory is reset per member, and a process start per member costs seconds
        return in_this_process(measure_member, spec)
    spec = {**spec, "result": str(workdir / f"{spec['name']}.json")}
    in_a_child(__file__, spec)
    return json.loads(Path(spec["result"]).read_text())


def newest_quality_file() -> Path | None:
    files = sorted(RESULTS.glob("zoo_training_*.json"))
    return files[-1] if files else None


def attach_quality(rows: list[dict], quality_file: Path | None) -> dict | None:
    """CardiacPSNR/SSIM of each row's member from the equal-budget training result, where it was trained."""
    if quality_file is None:
        return None
    quality = json.loads(quality_file.read_text())
    held_out = {name: member["held_out"] for name, member in quality["members"].items()}
    held_out |= quality.get("bicubic", {})
    for row in rows:
        scores = held_out.get(row["name"])
        row["cardiac_psnr"] = scores["cardiac_psnr"] if scores else None
        row["cardiac_ssim"] = scores["cardiac_ssim"] if scores else None
    return {"file": quality_file.name, "budget": quality["budget"], "hardware": quality["hardware"],
            "held_out": quality["held_out"], "date": quality["date"]}  # fmt: skip


def plot(rows: list[dict], title: str, png: Path) -> None:
    """FPS against parameters; colour: CardiacPSNR where the member was trained (hollow where not); marker: family;
    each point numbered, the numbers named in a list beside the axes (the members crowd in a few places)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, side) = plt.subplots(1, 2, figsize=(13, 6.5), dpi=120, gridspec_kw={"width_ratios": [3, 1.25]})
    scored = [r["cardiac_psnr"] for r in rows if r.get("cardiac_psnr") is not None]
    norm = matplotlib.colors.Normalize(min(scored), max(scored)) if scored else None
    markers = {"baseline": "s", "cmrvsr": "o", "ablation": "^"}
    names = []
    for number, row in enumerate(rows, 1):
        x, y = max(row["parameters"], 1), row["fps"]
        style = dict(marker=markers[row["family"]], s=70, linewidths=1.2)
        if row.get("cardiac_psnr") is not None:
            ax.scatter([x], [y], c=[row["cardiac_psnr"]], cmap="viridis", norm=norm, edgecolors="black", **style)
            quality = f"{row['cardiac_psnr']:.2f} dB"
        else:
            ax.scatter([x], [y], facecolors="none", edgecolors="grey", **style)
            quality = "not trained"
        ax.annotate(str(number), (x, y), textcoords="offset points", xytext=(6, 2 - 4 * (number % 3)), fontsize=7)
        names.append(f"{number:>2}  {row['name']:<26} {row['fps']:>8.2f} FPS  {quality}")
    ax.set_xscale("symlog", linthresh=1e4)
    ax.set_yscale("log")
    ax.margins(x=0.08, y=0.12)
    ax.set_xlabel("parameters (bicubic: 0)")
    ax.set_ylabel("FPS (output frames per second)")
    ax.set_title(title, fontsize=9)
    if norm is not None:
        bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=ax, pad=0.01)
        bar.set_label("CardiacPSNR (dB), held-out phantoms, equal-budget training", fontsize=8)
    handles = [plt.Line2D([], [], marker=m, linestyle="", color="grey", label=f) for f, m in markers.items()]
    handles.append(plt.Line2D([], [], marker="o", linestyle="", markerfacecolor="none", color="grey",
                              label="hollow: not trained at this budget"))  # fmt: skip
    ax.legend(handles=handles, loc="lower left", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    side.axis("off")
    side.text(0, 1, "\n".join(names), family="monospace", fontsize=7, va="top")
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    print(f"wrote {png}")


def title_for(result: dict) -> str:
    inputs, quality = result["input"], result.get("quality")
    title = (f"Fig. 4a on {result['hardware']}: {inputs['frames']}-frame cine at {inputs['lr_size']}² LR, "
             f"{inputs['precision']}, {result['date'][:10]}")  # fmt: skip
    if quality:
        title += f"\nquality: {quality['budget']['steps']} steps × {quality['budget']['batch']} clips on phantoms"
    return title


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", nargs="+", default=list(zoo.FIG4A), help="zoo names (default: FIG4A)")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--size", type=int, default=64, help="LR size (docs/model.md: 64×64)")
    parser.add_argument("--repeats", type=int, help="timed runs per member (default: 2 on a CPU, 10 on a GPU)")
    parser.add_argument("--path", default="auto", choices=PATHS)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quality", type=Path, help="zoo_training JSON (default: the newest committed one)")
    parser.add_argument("--no-quality", action="store_true", help="size and speed columns only")
    parser.add_argument("--out", type=Path, help="result JSON (default: benchmarks/results/fps_vs_params_…); the "
                        "PNG goes beside it")  # fmt: skip
    parser.add_argument("--replot", type=Path, help="redraw the plot of a result JSON (beside it) and stop")
    parser.add_argument("--in-process", action="store_true",
                        help="every member in this process (GPU: peak memory is still per member)")  # fmt: skip
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    if args.replot:
        draw(json.loads(args.replot.read_text()), args.replot.with_suffix(".png"))
        return
    unknown = [n for n in args.members if n not in zoo.names()]
    if unknown:
        parser.error(f"unknown zoo members {unknown}; choose from {zoo.names()}")
    device = torch.device(args.device)
    repeats = args.repeats or (10 if device.type == "cuda" else 2)
    spec = {"device": args.device, "frames": args.frames, "size": args.size, "repeats": repeats,
            "path": args.path, "precision": args.precision}  # fmt: skip
    start = time.perf_counter()
    quality_file = None if args.no_quality else (args.quality or newest_quality_file())
    hardware = hardware_name(device)
    out = args.out or RESULTS / f"fps_vs_params_{dt.date.today().isoformat()}_{hardware_kind(device)}.json"
    result = {
        "benchmark": "fps_vs_params",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "hardware": hardware,
        "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
        "input": {
            "frames": args.frames,
            "lr_size": args.size,
            "batch": 1,
            "precision": args.precision,
            "path": args.path,
            "repeats": repeats,
        },
        "complete": False,
        "rows": [],
        "failed": [],
    }
    rows = result["rows"]
    with tempfile.TemporaryDirectory() as tmp:
        for index, name in enumerate(args.members, 1):
            try:
                row = measure({**spec, "name": name}, Path(tmp), args.in_process)
            except MeasurementFailed as failure:
                result["failed"].append({"name": name, "error": str(failure)})
                print(f"[{index}/{len(args.members)}] {name:<28} FAILED {str(failure)[-300:]}", flush=True)
                write_result("fps_vs_params", hardware_kind(device), result, out, quiet=True)
                continue
            print(
                f"[{index}/{len(args.members)}] {name:<28} {row['parameters']:>10,} params "
                f"{row['gflops_per_frame']:>9.2f} GFLOP/frame {row['fps']:>9.2f} FPS  {row['path']}",
                flush=True,
            )
            rows.append(row)
            result["quality"] = attach_quality(rows, quality_file)
            # Written after every member: a sweep cut short (the device check's time limit) keeps what it measured.
            write_result("fps_vs_params", hardware_kind(device), result, out, quiet=index < len(args.members))
    result["complete"] = True
    result["sweep_wall_s"] = round(time.perf_counter() - start, 1)
    write_result("fps_vs_params", hardware_kind(device), result, out, quiet=True)
    draw(result, out.with_suffix(".png"))
    if result["failed"]:
        raise SystemExit(f"{len(result['failed'])} member(s) failed: " + ", ".join(f["name"] for f in result["failed"]))


def draw(result: dict, png: Path) -> None:
    try:
        plot(result["rows"], title_for(result), png)
    except ImportError:
        print("matplotlib is not installed (pip install 'cmrvsr_fast[bench]'): no plot drawn")


if __name__ == "__main__":
    main()
