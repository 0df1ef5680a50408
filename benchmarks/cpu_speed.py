"""The CPU speed a user's script gets: the Engine against the reference, with and without glibc's allocator
variables, interleaved in one run.

    python benchmarks/cpu_speed.py --short     # one cine, 3 rounds (about 4 minutes on the 2-core CPU)
    python benchmarks/cpu_speed.py             # one cine and a 10-slice stack (about 25 minutes)

Workload: paper-x4, ×4, 30-frame cines at 64×64 LR, seeded weights and inputs (the cost does not depend on the
weights). Paths: the reference model in eager fp32, the Engine as `cmrvsr_fast` builds it by default (its
schedule "auto": stepwise on a CPU, its convolution "auto": Winograd in fp32) in fp32 and bf16, the stepwise
schedule with direct convolutions in fp32 (the default before Winograd), the Engine's hoisted schedule in fp32 and
bf16 (what the CPU ran before the stepwise schedule), and the embedded default: `cmrvsr_fast.load()` (lite-x4, precision
"auto"), its network through the loaded runner and the whole `Upscaler.upscale` call, beside that network run by
the reference model in fp32.

The stack (10 cines in passes of as many as fit the Upscaler's 4 GiB budget) is timed for the reference and the
default Engine in fp32 and bf16, the reference in passes of as many cines as the Engine's fp32 estimate lets fit
that budget (in one pass it took 16 GB). Every (path, environment) pair runs in a process of its own (for the
stack, one per round), started with the allocator variables the Makefile used to set (MALLOC_MMAP_THRESHOLD_,
MALLOC_TRIM_THRESHOLD_, MALLOC_TOP_PAD_) or without any, as a user's `python` gets it. Each process builds its
path and makes one warm-up pass (of 4 frames for the stack: it makes every convolution primitive but the
frame-count-sized ones); the parent asks each in turn for one timed pass per round, in an order rotated every
round, so that a slow spell of a shared machine falls on every path alike. Reported per path: the median time,
the median over rounds of the reference's time in that round divided by the path's (the same environment's
reference), the ratio of its median time without the variables to that with them, the relative L2 error of its
output against the reference's, and what an Engine path ran (schedule and convolution). The JSON is written after
each workload.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from child_processes import die_with_parent
from measure import hardware_name
from results_io import write_result

from cmrvsr_fast import CMRVSR, ModelConfig

ALLOCATOR_VARIABLES = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "68719476736",
                       "MALLOC_TOP_PAD_": "1073741824"}  # fmt: skip
ENVIRONMENTS = ("plain", "allocator variables")
REFERENCE = "reference fp32"
PATHS = (REFERENCE, "engine fp32", "engine fp32 direct", "engine bf16", "engine fp32 hoisted", "engine bf16 hoisted")
# The embedded lite-x4 default: its network in the reference model (fp32), through the runner `load()` builds, and
# the whole `Upscaler.upscale` call (intensity window, phase codes, consistency step) on a stack in grey levels.
DEFAULT_PATHS = ("default reference fp32", "default engine", "default upscaler")
SHORT_PATHS = (REFERENCE, "engine fp32", "engine bf16", *DEFAULT_PATHS)
TARGETS = {"engine fp32": 1.1, "engine bf16": 2.2}  # × the reference, from plain Python
# Without the variables each Engine ratio is at least 90 % of the same ratio with them: the library needs no help
# from its environment (a ratio above the one with them is the allocator costing the reference more than the Engine).
WITHIN = 0.10
CHECKED_WITHOUT_VARIABLES = (*TARGETS, "default engine")


def build(path: str, slices: int, frames: int, size: int):
    """A callable running one pass of `path` on its input, seeded as in every process, and what it runs."""
    torch.manual_seed(0)
    lr = torch.randn(slices, frames, 1, size, size)
    phase = torch.rand(slices, frames) * 2 - 1
    if path in DEFAULT_PATHS:
        import cmrvsr_fast

        upscaler = cmrvsr_fast.load()  # every default: precision "auto", the Engine's schedule "auto"
        engine = upscaler.runner.engine
        runs = f"{upscaler.runner.precision} {engine.schedule} {engine.convolution}"
        if path == "default upscaler":
            stack = np.random.default_rng(0).uniform(0, 1000, (slices, frames, size, size)).astype(np.float32)
            return (lambda: torch.from_numpy(upscaler.upscale(stack))), runs
        if path == "default engine":
            return (lambda: upscaler.runner(lr, phase)), runs
        return (lambda: upscaler.model.eval()(lr, phase)), "reference model"
    from cmrvsr_fast.inference.engine import Engine

    model = CMRVSR(ModelConfig.from_name("paper-x4")).eval()
    if path == REFERENCE:  # a stack in passes of as many cines as the Upscaler's CPU budget lets the Engine take
        chunk = Engine(model, memory_budget_mb=4096).cines_per_pass(frames, size, size)
        return (
            lambda: torch.cat([model(lr[i : i + chunk], phase[i : i + chunk]) for i in range(0, slices, chunk)])
        ), "reference model"

    words = path.split()
    dtype = torch.bfloat16 if "bf16" in words else torch.float32
    engine = Engine(model, dtype=dtype, schedule="hoisted" if "hoisted" in words else "auto",
                    convolution="direct" if "direct" in words else "auto", memory_budget_mb=4096)  # fmt: skip
    return (lambda: engine(lr, phase)), f"{engine.schedule} {engine.convolution}"


def worker(spec: dict) -> None:
    """Serve one path: 'warmup' (answers the seconds and what the path runs), 'run' (answers the seconds), 'save
    FILE' (the last output), 'quit'."""
    torch.set_grad_enabled(False)
    run, runs = build(spec["path"], spec["slices"], spec["frames"], spec["size"])
    warm = run if spec["slices"] == 1 else build(spec["path"], spec["slices"], min(4, spec["frames"]), spec["size"])[0]
    out = None
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "quit":
            return
        if command == "save":
            torch.save(out.float(), argument)
            answer = {}
        else:
            start = time.perf_counter()
            out = (warm if command == "warmup" else run)()
            answer = {"seconds": time.perf_counter() - start, **({"runs": runs} if command == "warmup" else {})}
        print(json.dumps(answer), flush=True)


class Worker:
    """One path in one environment, in a process of its own."""

    def __init__(self, spec: dict, environment: str) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_VARIABLES}
        if environment != "plain":
            env.update(ALLOCATOR_VARIABLES)
        self.process = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)], env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        preexec_fn=die_with_parent)  # fmt: skip

    def ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError(f"worker exited with {self.process.wait()} on {command!r}")
        return json.loads(answer)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
        self.process.wait()


def measure_workload(paths: list[str], slices: int, args, workdir: Path) -> list[dict]:
    """One cine: a process per pair for the whole run. A stack: a process per pair and round, warmed up, timed
    and closed before the next starts (a process per pair for the whole run held too much memory for 24 GiB)."""
    spec = {"slices": slices, "frames": args.frames, "size": args.size}
    pairs = [(path, environment) for environment in ENVIRONMENTS for path in paths]
    rounds = args.rounds if slices == 1 else args.stack_rounds
    workers: dict[tuple, Worker] = {}
    times: dict[tuple, list[float]] = {pair: [] for pair in pairs}
    outputs, runs = {}, {}

    def worker_for(pair: tuple) -> Worker:
        if pair not in workers:  # started and warmed up one at a time: no two passes overlap
            workers[pair] = Worker({**spec, "path": pair[0]}, pair[1])
            runs[pair[0]] = workers[pair].ask("warmup")["runs"]
        return workers[pair]

    try:
        for round_index in range(rounds):
            shift = round_index % len(pairs)
            for pair in pairs[shift:] + pairs[:shift]:
                times[pair].append(worker_for(pair).ask("run")["seconds"])
                print(f"  {slices:>2} × {pair[0]:<22} {pair[1]:<19} {times[pair][-1]:8.2f} s", flush=True)
                if pair[1] == "plain" and round_index == rounds - 1:
                    file = workdir / f"{slices}_{pair[0].replace(' ', '_')}.pt"
                    workers[pair].ask(f"save {file}")
                    outputs[pair[0]] = torch.load(file, weights_only=True)
                if slices > 1:
                    workers.pop(pair).close()
    finally:
        for one in workers.values():
            one.close()
    return summarise(paths, slices, times, outputs, runs)


def summarise(paths: list[str], slices: int, times: dict, outputs: dict, runs: dict | None = None) -> list[dict]:
    rows = []
    for path in paths:
        reference = "default reference fp32" if path in DEFAULT_PATHS else REFERENCE
        row = {"slices": slices, "path": path, "versus": reference, "runs": (runs or {}).get(path)}
        for environment in ENVIRONMENTS:
            mine, base = times[(path, environment)], times[(reference, environment)]
            key = "plain" if environment == "plain" else "allocator_variables"
            ratios = [b / m for b, m in zip(base, mine, strict=True)]  # the same round's reference over the path
            row[key] = {"median_s": round(statistics.median(mine), 3), "all_s": [round(t, 3) for t in mine],
                        "ratio_vs_reference": round(statistics.median(ratios), 3)}  # fmt: skip
        plain, variables = row["plain"], row["allocator_variables"]
        row["plain_time_over_variables_time"] = round(plain["median_s"] / variables["median_s"], 3)
        if path != "default upscaler":  # the whole call works in grey levels, not the network's units
            out, ref = outputs[path].double(), outputs[reference].double()
            row["relative_l2"] = float((out - ref).norm() / ref.norm())
        rows.append(row)
        print(f"{slices:>2} × {path:<22} plain {plain['median_s']:8.2f} s  ×{plain['ratio_vs_reference']:5.2f}   "
              f"with variables ×{variables['ratio_vs_reference']:5.2f}", flush=True)  # fmt: skip
    return rows


def verdicts(rows: list[dict]) -> list[dict]:
    """The targets, from plain Python, and the ratios without the variables against those with them, per workload."""
    found = []
    for row in rows:
        plain, variables = row["plain"]["ratio_vs_reference"], row["allocator_variables"]["ratio_vs_reference"]
        if row["path"] in TARGETS:
            target = TARGETS[row["path"]]
            found.append({"slices": row["slices"], "path": row["path"], "check": f"plain ratio >= {target}",
                          "ratio": plain, "met": plain >= target})  # fmt: skip
        if row["path"] in CHECKED_WITHOUT_VARIABLES:
            found.append({"slices": row["slices"], "path": row["path"], "check": "plain ratio >= 0.9 × the ratio "
                          "with the variables", "plain": plain, "variables": variables,
                          "met": plain >= (1 - WITHIN) * variables})  # fmt: skip
    return found


def cpu_facts() -> dict:
    flags = set()
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return {"threads": torch.get_num_threads(), "cores": os.cpu_count(), "capability":
            torch.backends.cpu.get_cpu_capability(), "avx512_bf16": "avx512_bf16" in flags,
            "amx_bf16": "amx_bf16" in flags}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="one cine only, the short path list")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="timed passes per path for one cine")
    parser.add_argument("--stack-rounds", type=int, default=2, help="timed passes per path for the stack")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    stack = (10, [REFERENCE, *TARGETS])  # the hoisted schedule and the default: on one cine only
    workloads = [(1, list(SHORT_PATHS))] if args.short else [(1, [*PATHS, *DEFAULT_PATHS]), stack]
    result = {
        "benchmark": "cpu_speed",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "hardware": hardware_name(torch.device("cpu")),
        "cpu": cpu_facts(),
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "config": dict(
            preset="paper-x4",
            frames=args.frames,
            lr_size=args.size,
            rounds=args.rounds,
            stack_rounds=args.stack_rounds,
            short=args.short,
            allocator_variables=ALLOCATOR_VARIABLES,
        ),
        "rows": [],
        "complete": False,
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for slices, paths in workloads:
            result["rows"] += measure_workload(paths, slices, args, Path(tmp))
            result["verdicts"] = verdicts(result["rows"])
            result["wall_s"] = round(time.perf_counter() - started, 1)
            result["complete"] = slices == workloads[-1][0]
            path = write_result("cpu_speed", "cpu", result, args.out, quiet=True)  # after each workload
    print(f"wrote {path}")
    for verdict in result["verdicts"]:
        print(("met    " if verdict["met"] else "MISSED ") + json.dumps(verdict))


if __name__ == "__main__":
    main()
