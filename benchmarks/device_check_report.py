"""A device check's JSON as Markdown tables: what `make device-check` prints at its end and writes beside its JSON
(device_check.md), and what GPU_NOTES.md takes its tables from.

    python benchmarks/device_check_report.py benchmarks/results/device_check_<date>_<hardware>_run<N>.json

Every number is read from the JSON (nothing is measured here); ratios are the ones its steps computed side by side
in their run, or quotients of two rows of one table. A step stopped at its time limit leaves a partial section:
each section says what is missing rather than failing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PROFILE_KERNELS = 8  # per profiled path
NAME_WIDTH = 90  # kernel names are C++ signatures: cut


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join("" if cell is None else str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def number(value, digits: int = 3) -> str | None:
    if value is None:
        return None
    return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:.0f}"


def header(result: dict) -> str:
    facts = result.get("facts") or {}
    device = facts.get("gpu") or "no GPU"
    where = " (CPU rehearsal)" if result.get("rehearsal_on_cpu") else ""
    versions = ", ".join(f"{k} {facts[k]}" for k in ("torch", "triton", "cuda_runtime") if facts.get(k))
    lines = [f"# Device check{where}: {device}, {result.get('date', 'no date')}, commit {result.get('commit')}"]
    if versions:
        lines.append(f"\n{versions}; compute capability {facts.get('compute_capability')}; {result.get('total_s')} s")
    return "\n".join(lines)


def steps(result: dict) -> str:
    rows = [[s.get("step"), s.get("status"), s.get("seconds")] for s in result.get("steps", [])]
    return "## Steps\n\n" + table(["step", "status", "s"], rows)


def targets(result: dict) -> str:
    found = result.get("targets")
    if not found:
        return "## Targets\n\nnot computed (no stack rows, or no matmul rate)"
    required = found.get("required", {})
    rows = [
        [name, found.get(name), required.get(name)]
        for name in ("vs_reference_eager_fp32", "vs_reference_compiled", "roofline_fraction")
    ]
    lines = [
        "## Targets",
        "",
        f"Best bf16 path on the {found.get('slices')}-slice stack: **{found.get('best_bf16_path')}**; compiled "
        f"baseline: {found.get('reference_compiled_path')}"
        + (
            f"; against the IEEE-fp32 reference: {ieee}×."
            if (ieee := found.get("vs_reference_eager_ieee_fp32"))
            else "."
        ),
        "",
        table(["target", "measured", "required"], rows),
    ]
    tuned = found.get("with_cudnn_benchmark")
    if tuned:
        lines += ["", f"With cuDNN's benchmark mode: **{tuned['best_bf16_path']}**, "
                  f"{tuned['vs_reference_eager_fp32_cudnn_benchmark']}× the reference with the mode, "
                  f"{tuned['vs_reference_eager_fp32']}× the reference without it, "
                  f"{tuned['roofline_fraction']} of the roofline."]  # fmt: skip
    return "\n".join(lines)


def engine_rows(result: dict, step: str, label: str) -> str:
    bench = result.get(step)
    if not bench or not bench.get("rows"):
        return f"## {label}\n\nno rows (step `{step}` missing, failed or stopped before its first row)"
    size = (bench.get("config") or {}).get("lr_size")
    title = f"{label}, {size}×{size} LR" if size else label
    rate = (result.get("matmul_rate") or {}).get("tflops")
    rows = []
    for row in bench["rows"]:
        times = row.get("all_latencies_s") or [row["latency_s"]]
        spread = max(times) / min(times) - 1 if min(times) > 0 else None
        rows.append([
            row["path"], row["slices"], number(row["latency_s"]), number(row["fps"], 4), number(row["tflops"]),
            number(row.get("speedup_vs_reference")), number(100 * row["tflops"] / rate) if rate else None,
            None if row.get("relative_l2") is None else f"{row['relative_l2']:.1e}",
            None if spread is None else f"{100 * spread:.1f} %", number(row.get("peak_memory_mb"), 4),
        ])  # fmt: skip
    lines = [f"## {title}", "", table(["path", "slices", "s per pass", "FPS", "TFLOP/s", "× ref. eager",
                                       "% roofline", "rel. L2", "spread", "peak MB"], rows)]  # fmt: skip
    if bench.get("failed"):
        lines += [
            "",
            "Failed: " + "; ".join(f"{f['slices']} × {f['path']}: {f['error'][-160:]}" for f in bench["failed"]),
        ]
    if not bench.get("complete", True):
        lines += ["", "(stopped before its end: the paths after the last row were not reached)"]
    return "\n".join(lines)


def tile_name(config: dict) -> str:
    name = f"{config.get('BLOCK_P')}×{config.get('BLOCK_F')}×{config.get('BLOCK_K')} w{config.get('num_warps')}"
    name += f" s{config.get('num_stages')}"
    if config.get("GATES_FIRST"):
        name += " gates-first"
    if config.get("TMA"):
        name += f" TMA W{config.get('BLOCK_W')}"
    return name


def kernels(result: dict) -> str:
    rows = result.get("kernels") or []
    if not rows:
        return "## Kernels\n\nno rows"
    tiles = [r for r in rows if isinstance(r, dict) and r.get("op") == "convlstm_step_nhwc_tile"]
    others = [r for r in rows if isinstance(r, dict) and r.get("op") != "convlstm_step_nhwc_tile"]
    lines = ["## Kernels"]
    if tiles:
        lines += ["", "Channels-last step, each autotuning tile:", "", table(
            ["tile", "shape", "dtype", "ms", "TFLOP/s", "least-traffic GB/s", "TMA applied", "rel. L2 h"],
            [[tile_name(r.get("config", {})), r.get("shape"), r.get("dtype"), number(r.get("ms")),
              number(r.get("tflops")), number(r.get("least_traffic_gb_per_s"), 4), r.get("tma_applied"),
              None if r.get("rel_l2_h") is None else f"{r['rel_l2_h']:.1e}"] for r in tiles])]  # fmt: skip
    if others:
        timed = [[r.get("op"), r.get("shape") or r.get("case"), r.get("dtype"),
                  ", ".join(f"{k} {number(v)}" for k, v in r.items() if "ms" in k and isinstance(v, (int, float)))]
                 for r in others]  # fmt: skip
        lines += ["", table(["op", "shape", "dtype", "times (ms)"], timed)]
    return "\n".join(lines)


def profile(result: dict) -> str:
    found = result.get("profile") or {}
    paths = found.get("paths") or []
    if not paths:
        return "## Profile\n\nno profile"
    lines = ["## Profile"]
    for entry in paths:
        busy = entry.get("busy_fraction")
        lines += ["", f"{entry.get('path')}: pass {entry.get('pass_s')} s, device {entry.get('device_time_s')} s"
                  + (f", busy {100 * busy:.0f} %" if busy is not None else ""), ""]  # fmt: skip
        top = entry.get("top", [])[:PROFILE_KERNELS]
        lines.append(table(["kernel", "ms", "share", "calls"],
                           [[k["name"][:NAME_WIDTH], number(k["self_ms"], 4), f"{100 * k['share']:.1f} %", k["calls"]]
                            for k in top]))  # fmt: skip
    return "\n".join(lines)


def sweep(result: dict) -> str:
    found = result.get("fps_vs_params") or {}
    rows = found.get("rows") or []
    if not rows:
        return "## FPS against parameters\n\nno rows"
    return "## FPS against parameters\n\n" + table(
        ["member", "path", "parameters", "GFLOP per frame", "FPS"],
        [[r["name"], r.get("path"), r.get("parameters"), r.get("gflops_per_frame"), number(r.get("fps"), 4)]
         for r in rows])  # fmt: skip


def report(result: dict) -> str:
    sections = [
        header(result), steps(result), targets(result),
        engine_rows(result, "bench_engine", "Stack"),
        engine_rows(result, "bench_engine_tma", "Stack, TMA tiles offered"),
        engine_rows(result, "bench_engine_autotune", "Stack, the reference under max-autotune and after it"),
        engine_rows(result, "bench_engine_1", "One cine"),
        engine_rows(result, "bench_engine_128", "Larger matrix"),
        kernels(result), profile(result), sweep(result),
    ]  # fmt: skip
    return "\n\n".join(sections) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="a device_check.json")
    parser.add_argument("--out", type=Path, help="write the Markdown here instead of printing it")
    args = parser.parse_args()
    text = report(json.loads(args.json.read_text()))
    if args.out:
        args.out.write_text(text)
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
