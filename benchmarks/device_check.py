"""`make device-check`: what a lent GPU should verify, in prepared runs that cannot lose their results.

    python benchmarks/device_check.py [--run first|later|all] [--out DIR] [--budget-s 330] [--commit REV]
                                      [--cpu-rehearsal] [--skip STEP...] [--stack-paths PATH...]

Every run: the wheels a run carried (`.wheels/` or `.whl/`: pydicom, nibabel; none: the tests needing them skip
with the reason), an offline editable install with the CUDA extension (CMRVSR_BUILD_CUDA=1) for this GPU's arch,
the facts (GPU, compute capability, CUDA runtime, torch, triton, onnxruntime, the extension) and the bf16 matmul
rate (cuBLAS, 8192³): the roofline the engine's TFLOP/s are compared with. Then the run's steps (RUNS), each with
a share of the budget left at its start, each recorded whatever happens (a failing step does not stop the
others; a stopped step keeps the rows it printed), and device_check.json rewritten after every step (a check
killed at any moment keeps what it measured; "complete" says whether it ran to its end):

  --run first (default; 5.5 minutes at most with the default budget: a 6-minute `timeout` stops nothing early):
  1. kernels: both ops (Triton, PyTorch, the CUDA C++ twins) against their references, timed with do_bench —
     the step's autotuning tiles, the layer, the fusion; the rows that decide `auto` (ops/backends.py);
  2. bench_engine: the 10-slice stack, 64×64 LR ×4, in one process: the references (TF32 eager, compiled, IEEE
     eager), the fastest paths and the default, each beside its twin with cuDNN's benchmark mode on, then the
     other bf16 paths (DECIDING_STACK_PATHS); the issue's targets are computed from the stack rows;
  3. kernels_tma and bench_engine_tma: the TMA tiles, never yet run on a GPU, in processes of their own after
     the rows above (a fault poisons a process's CUDA context);
  4. gpu_tests: `pytest -m gpu` (verbose, durations, skip reasons, JUnit XML; 4 workers with pytest-xdist); when
     one fails, compute-sanitizer memcheck over the CUDA C++ kernel tests.
  --run later:
  5. bench_engine_autotune: the reference compiled under Inductor's max-autotune (the issue's compiled baseline;
     minutes of compilation) and the rows after it (AFTER_MAX_AUTOTUNE);
  6. profile: benchmarks/profile_engine.py (kernels ranked by device time for the fastest engine paths);
  7. bench_engine_1: one cine, 64×64 LR; 8. bench_engine_128: a 10-slice stack and one cine at 128×128 LR;
  9. the Fig. 4a sweep (benchmarks/fps_vs_params.py) over the zoo, with whatever time is left.
  --run all: both; then the reference is compiled under max-autotune in the background beside the GPU tests
  (`autotune_warmup`, its own Inductor cache, the shared Triton cache), so that step 5 finds Triton's candidates
  compiled; the warm-up is waited for a while after the tests, then stopped; its own timing is not a result.
(ONNX Runtime in the CPU rehearsal only: the GPU image's onnxruntime has no CUDA provider. The pytest
micro-benchmarks, `pytest benchmarks/ --benchmark-only`, repeat step 1's timings and run on their own.)
Writes device_check.json (or --json) and device_check.md (its tables, at the end) with the step logs under --out,
default $OUT or benchmarks/results/. `--cpu-rehearsal` runs the same script on a CPU at toy sizes, so that it is tested
before a GPU is lent. `--skip STEP ...` leaves steps out (recorded as skipped). `--stack-paths PATH ...` replaces
step 2's paths (a focused rerun).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from child_processes import die_with_parent
from device_check_report import report

ROOT = Path(__file__).resolve().parent.parent


def run_step(name: str, command: list[str], limit_s: float, out: Path, env: dict | None = None) -> dict:
    start = time.perf_counter()
    log = out / f"{name}.log"
    try:
        done = subprocess.run(command, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                              timeout=max(limit_s, 1))  # fmt: skip
        stdout, stderr = done.stdout, done.stderr
        status = "ok" if done.returncode == 0 else f"failed (exit {done.returncode})"
    except subprocess.TimeoutExpired as expired:
        stdout, stderr = (_text(expired.stdout), _text(expired.stderr))
        status = f"timed out after {limit_s:.0f} s"
    log.write_text(f"{status}\n{stdout}\n--- stderr ---\n{stderr}")
    seconds = round(time.perf_counter() - start, 1)
    print(f"[device-check] {name}: {status} in {seconds} s", flush=True)
    return {"step": name, "status": status, "seconds": seconds, "log": log.name,
            "tail": (stdout + stderr)[-1500:], "json_lines": _json_lines(stdout)}  # fmt: skip


def start_background(name: str, command: list[str], out: Path, env: dict | None = None) -> dict:
    """A step that runs beside the next ones (its own process group, its output to its log); finish_background
    must follow, in a `finally` (stop_background) so that no orphan keeps the GPU busy after this script."""
    log = (out / f"{name}.log").open("w")
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True,
                               preexec_fn=die_with_parent)  # fmt: skip
    print(f"[device-check] {name}: started in the background", flush=True)
    return {"name": name, "process": process, "log": log, "start": time.perf_counter()}


def finish_background(job: dict, wait_s: float) -> dict:
    """Wait up to wait_s for a background step, then stop it (and its children); recorded as run_step does."""
    process = job["process"]
    try:
        process.wait(timeout=max(wait_s, 0.1))
        status = "ok" if process.returncode == 0 else f"failed (exit {process.returncode})"
    except subprocess.TimeoutExpired:
        status = f"stopped after {time.perf_counter() - job['start']:.0f} s"
    stop_background(job)  # also any compile workers it left in its group
    seconds = round(time.perf_counter() - job["start"], 1)
    print(f"[device-check] {job['name']}: {status} in {seconds} s", flush=True)
    text = Path(job["log"].name).read_text(errors="replace")
    return {"step": job["name"], "status": status, "seconds": seconds, "log": Path(job["log"].name).name,
            "tail": text[-1500:], "json_lines": _json_lines(text)}  # fmt: skip


def stop_background(job: dict) -> None:
    """Kill a background step's process group (idempotent) and close its log."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(job["process"].pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        job["process"].wait(timeout=30)
    job["log"].close()


def _text(output: bytes | str | None) -> str:
    """A stopped child's partial output (bytes, even with text=True)."""
    return output.decode(errors="replace") if isinstance(output, bytes) else (output or "")


def _json_lines(stdout: str) -> list:
    """Every stdout line that is JSON, in order: the steps print their results (and progress rows) as JSON
    lines, so a step stopped at its limit keeps what it printed, and a warning on stderr cannot hide them."""
    parsed = []
    for line in stdout.splitlines():
        with contextlib.suppress(ValueError):
            if line.startswith(("{", "[")):
                parsed.append(json.loads(line))
    return parsed


FACTS = """
import json, torch
facts = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "cuda_runtime": torch.version.cuda}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    facts.update(gpu=p.name, compute_capability=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2**30, 1),
                 sms=p.multi_processor_count)
try:
    import triton; facts["triton"] = triton.__version__
except ImportError as e:
    facts["triton"] = f"absent ({e})"
try:
    import onnxruntime as ort
    facts.update(onnxruntime=ort.__version__, ort_providers=ort.get_available_providers())
except ImportError as e:
    facts["onnxruntime"] = f"absent ({e})"
from cmrvsr_fast.ops import extension as _ext
facts["extension"] = "loaded" if _ext.available() else f"absent: {_ext.UNAVAILABLE_REASON}"
if _ext.available():
    ext = _ext.extension()
    facts.update(extension_runtime=ext.cuda_runtime_version(), extension_archs=ext.compiled_archs(),
                 extension_devices=ext.device_count(), convlstm_kernel_bf16_f64=ext.convlstm_step_kernel(1, 64))
print(json.dumps(facts))
"""

# The bf16 tensor-core roofline of this GPU as cuBLAS reaches it: a large square bf16 matmul, timed with events.
MATMUL_RATE = """
import json, time, torch
cuda = torch.cuda.is_available()
n, dtype = (8192, torch.bfloat16) if cuda else (512, torch.float32)
a = torch.randn(n, n, dtype=dtype, device="cuda" if cuda else "cpu"); b = torch.randn_like(a)
for _ in range(3):
    a @ b
if cuda:
    torch.cuda.synchronize()
start = time.perf_counter()
iterations = 20 if cuda else 2
for _ in range(iterations):
    a @ b
if cuda:
    torch.cuda.synchronize()
seconds = (time.perf_counter() - start) / iterations
print(json.dumps({"n": n, "dtype": str(dtype), "tflops": 2 * n**3 / seconds / 1e12}))
"""


def current_commit() -> str | None:
    """git's HEAD of the checkout, or None where there is no .git (the device tool's copy)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10)  # fmt: skip
        return done.stdout.strip() or None if done.returncode == 0 else None
    return None


def local_cuda_arch() -> str:
    """The lent GPU's compute capability as CMRVSR_CUDA_ARCHS spells it ("90" on an H100), or the full default
    list when it cannot be read (the build then covers every supported arch)."""
    query = "import torch; p = torch.cuda.get_device_capability(0); print(f'{p[0]}{p[1]}')"
    try:
        done = subprocess.run([sys.executable, "-c", query], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "80;86;87;89;90"
    arch = done.stdout.strip()
    return arch if done.returncode == 0 and arch.isdigit() else "80;86;87;89;90"


def targets(rows: list[dict], matmul_tflops: float) -> dict:
    """Issue 7's targets on the largest stack measured: the best bf16 path against reference eager fp32 and the
    compiled reference, and its achieved TFLOP/s (model/cost.py) as a fraction of the measured bf16 matmul rate.
    Like against like: the references run with cuDNN's benchmark mode off (PyTorch's default), so the targets'
    best path is chosen among the paths without it; the paths with it get their own block, against the reference
    with the mode on where that row ran."""
    if not rows:  # the reference failed or the step stopped before its first row
        return {}
    slices = max(row["slices"] for row in rows)
    stack = {row["path"]: row for row in rows if row["slices"] == slices}

    def fastest(paths) -> dict | None:
        return max((stack[path] for path in paths), key=lambda row: row["fps"], default=None)

    def ratio(row: dict | None, base: dict | None) -> float | None:
        return round(row["fps"] / base["fps"], 2) if row and base else None

    tuned = [p for p in stack if "bf16" in p and "cudnn-benchmark" in p.split()]
    best = fastest(p for p in stack if "bf16" in p and p not in tuned)
    if best is None:
        return {}
    reference = stack.get("reference fp32")
    # The compiled baseline: the faster of Inductor's default mode and max-autotune (the issue's), whichever ran.
    compiled = fastest(p for p in ("reference fp32 compiled", "reference fp32 compiled max-autotune") if p in stack)
    best_tuned = fastest(tuned)
    return {
        "slices": slices,
        "best_bf16_path": best["path"],
        "vs_reference_eager_fp32": ratio(best, reference),
        "vs_reference_compiled": ratio(best, compiled),
        "reference_compiled_path": compiled["path"] if compiled else None,
        # beside the targets: the reference without TF32 rounding
        "vs_reference_eager_ieee_fp32": ratio(best, stack.get("reference fp32 ieee")),
        "roofline_fraction": round(best["tflops"] / matmul_tflops, 4),
        "required": {"vs_reference_eager_fp32": 5.0, "vs_reference_compiled": 1.5, "roofline_fraction": 0.35},
        "with_cudnn_benchmark": best_tuned
        and {
            "best_bf16_path": best_tuned["path"],
            "vs_reference_eager_fp32_cudnn_benchmark": ratio(best_tuned, stack.get("reference fp32 cudnn-benchmark")),
            "vs_reference_eager_fp32": ratio(best_tuned, reference),
            "roofline_fraction": round(best_tuned["tflops"] / matmul_tflops, 4),
        },
        "per_path_roofline_fraction": {path: round(row["tflops"] / matmul_tflops, 4) for path, row in stack.items()},
    }


MAX_AUTOTUNE = "reference fp32 compiled max-autotune"
# The stack rows after max-autotune: an earlier GPU run measured each (the float32 Triton one without its graph),
# none is a target's, and together they took over a minute (IEEE float32 Triton kernels, the CUDA C++ WMMA
# backend, 24 s compiling the PyTorch-ops engine for dynamic shapes).
AFTER_MAX_AUTOTUNE = ("engine bf16 cuda graph", "engine fp32 triton graph", "engine fp32",
                      "engine bf16 compiled dynamic")  # fmt: skip
# The stack rows that decide `auto` and the targets, in order of importance: the references (TF32 eager, compiled,
# IEEE eager), the paths measured fastest (compiled pieces with the Triton layer op for the recurrence:
# docs/performance.md) and the product's default, each beside its twin with cuDNN's benchmark mode on (in a child
# process: bench_engine.ISOLATED), the reference with the mode too; then the other bf16 paths.
DECIDING_STACK_PATHS = (
    "reference fp32", "reference fp32 compiled", "reference fp32 ieee", "engine bf16 compiled triton-step",
    "engine bf16 compiled triton-step cudnn-benchmark", "engine bf16 auto", "engine bf16 auto cudnn-benchmark",
    "reference fp32 cudnn-benchmark", "engine bf16 auto compiled dynamic", "engine bf16 compiled triton-step graph",
    "engine bf16 compiled", "engine bf16 triton graph", "engine bf16 triton", "engine bf16 compiled graph",
    "engine bf16", "engine bf16 compiled triton-fusion",
)  # fmt: skip
# The TMA tiles offered to the autotuner, never yet run on a GPU: a step of their own after the deciding rows,
# each path in a child process (bench_engine.ISOLATED), compared with their twins above.
TMA_STACK_PATHS = ("engine bf16 auto tma", "engine bf16 compiled triton-step tma")
# Every step in the order it runs. A first run (`--run first`, the default) takes the rows that decide `auto` and
# the targets, the untried tiles after them, then the GPU tests; `--run later` the rest: the reference under
# max-autotune (minutes of compilation) and the rows after it, the profile, one cine, 128×128 and the Fig. 4a
# sweep; `--run all` both, for a long lease.
FIRST_RUN = ("kernels", "bench_engine", "kernels_tma", "bench_engine_tma", "gpu_tests")
LATER_RUN = ("bench_engine_autotune", "profile", "bench_engine_1", "bench_engine_128", "fps_vs_params")
RUNS = {"first": FIRST_RUN, "later": LATER_RUN, "all": (*FIRST_RUN, *LATER_RUN)}
# Each step's share of the budget left at its start (the last of a run takes what remains but a margin).
# With the default budget (330 s, about 27 s of it before the first step) a first run gives at most about 76 s to
# the kernels, 102 s to the stack, 25 and 30 s to the TMA tiles and 60 s to the GPU tests (62 s in an earlier run).
SHARES = {"kernels": 0.25, "bench_engine": 0.45, "kernels_tma": 0.2, "bench_engine_tma": 0.3, "gpu_tests": 0.85,
          "bench_engine_autotune": 0.5, "profile": 0.35, "bench_engine_1": 0.4, "bench_engine_128": 0.5,
          "fps_vs_params": 0.95}  # fmt: skip
BENCHMARK_STEPS = ("bench_engine", "bench_engine_tma", "bench_engine_autotune", "profile", "bench_engine_1",
                   "bench_engine_128", "fps_vs_params")  # fmt: skip


def autotune_warmup_command(python: str, out: Path, cpu_rehearsal: bool) -> list[str]:
    """The reference compiled under max-autotune on exactly the shapes of the step that measures it (the same
    script, sizes and pass budget), so that Inductor's caches hold what that step will compile."""
    command = [python, "benchmarks/bench_engine.py", "--out", str(out / "autotune_warmup.json"), "--repeats", "1",
               "--stack-repeats", "1", "--paths", MAX_AUTOTUNE]  # fmt: skip
    if cpu_rehearsal:
        return [*command, "--preset", "lite-x4", "--frames", "4", "--size", "12", "--slices", "2"]
    return [*command, "--in-process", "--slices", "10", "--budget-mb", "65536"]


def warmup_environment() -> dict[str, str]:
    """The warm-up's own Inductor cache (its graphs and contended autotuning choices stay there); Triton's cache,
    where the compiled candidates go, is the one every step shares (TRITON_CACHE_DIR, set by main)."""
    return {"TORCHINDUCTOR_CACHE_DIR": str(Path(tempfile.gettempdir()) / "cmrvsr_device_check_inductor_warmup")}


def benchmark_commands(
    python: str, out: Path, cpu_rehearsal: bool, stack_paths: list[str] | None = None
) -> dict[str, tuple[list[str], Path]]:
    """The benchmark steps' command lines and the JSON each writes (tests/test_device_check.py parses every one
    with its script's own parser: a wrong argument cost the first GPU run its whole engine benchmark)."""
    bench_json = out / "bench_engine_device.json"
    bench = [python, "benchmarks/bench_engine.py", "--out", str(bench_json), "--repeats", "3"]
    tma_json = out / "bench_engine_tma_device.json"
    tma = [python, "benchmarks/bench_engine.py", "--out", str(tma_json), "--repeats", "3"]
    autotune_json = out / "bench_engine_autotune_device.json"
    autotune = [python, "benchmarks/bench_engine.py", "--out", str(autotune_json), "--repeats", "3"]
    single_json = out / "bench_engine_1_device.json"
    single = [python, "benchmarks/bench_engine.py", "--out", str(single_json), "--repeats", "3", "--slices", "1"]
    if cpu_rehearsal:
        toy = ["--preset", "lite-x4", "--frames", "4", "--size", "12", "--repeats", "1", "--slices", "2"]
        bench += [*toy, "--paths", "reference fp32", "reference fp32 compiled", "engine fp32", "engine bf16",
                  "engine bf16 auto", "engine bf16 auto cudnn-benchmark", "engine bf16 compiled",
                  "onnxruntime fp32"]  # fmt: skip
        tma += [*toy, "--paths", "reference fp32", "engine bf16 auto tma"]
        autotune += [*toy, "--paths", "reference fp32", MAX_AUTOTUNE]
        single += [*toy[:-2], "--paths", "reference fp32", "engine bf16"]
    else:
        # The 10-slice stack (the targets) in one pass (the CPU's 4 GiB pass budget would split it into
        # five), in one process (a Python and CUDA start per path costs seconds each), the paths in order of
        # importance: a step stopped at its limit keeps what matters. No ONNX Runtime row: the image's
        # onnxruntime runs on the CPU only, minutes per paper-x4 stack. Each of the three stack steps measures
        # "reference fp32" first (bench_engine.py's parity baseline), so each has its own same-run reference.
        stack = ["--in-process", "--slices", "10", "--budget-mb", "65536", "--stack-repeats", "3", "--paths"]
        bench += [*stack, *(stack_paths or DECIDING_STACK_PATHS)]  # --stack-paths: a focused rerun's own list
        tma += [*stack, "reference fp32", *TMA_STACK_PATHS]
        # The compiled baseline: its compilation can take minutes (the background warm-up beside the GPU
        # tests makes it cheaper when both run); should it still run long, only AFTER_MAX_AUTOTUNE's rows are lost.
        autotune += [*stack, "reference fp32", MAX_AUTOTUNE, *AFTER_MAX_AUTOTUNE]
        # One cine: where launch overhead, and so CUDA graphs, should matter most.
        single += ["--in-process", "--paths", "reference fp32", "reference fp32 compiled", "engine bf16 auto",
                   "engine bf16 auto graph", "engine bf16 compiled", "engine bf16 triton graph", "engine bf16 triton",
                   "engine bf16 graph", "engine bf16", "engine bf16 cuda graph"]  # fmt: skip
    # Where the time goes: kernels ranked by device time for the reference and the engine (eager, torch and
    # Triton backends) on the stack. (The pytest micro-benchmarks, `pytest benchmarks/ --benchmark-only`, repeat
    # the kernels step's do_bench timings: they run on their own, not here.)
    profile_json = out / "profile_engine_device.json"
    profile = [python, "benchmarks/profile_engine.py", "--out", str(profile_json)]
    if not cpu_rehearsal:  # the fastest paths
        # The best path measured, the product's default (eager, backend auto), and the all-Triton one.
        profile += ["--paths", "engine bf16 compiled triton-step", "engine bf16 auto", "engine bf16 triton"]
    if cpu_rehearsal:
        profile += ["--preset", "lite-x4", "--frames", "4", "--size", "12", "--slices", "2", "--paths",
                    "reference fp32", "engine bf16"]  # fmt: skip
    # The 128×128 LR rows: the reference and the best paths of the stack.
    bench_128_json = out / "bench_engine_128_device.json"
    bench_128 = [python, "benchmarks/bench_engine.py", "--out", str(bench_128_json)]
    if cpu_rehearsal:
        bench_128 += ["--slices", "1", "--preset", "lite-x4", "--frames", "4", "--size", "16", "--repeats", "1",
                      "--paths", "reference fp32", "engine bf16"]  # fmt: skip
    else:
        # The 10-slice stack first (the issue asks for both counts), the paths that build fastest first (a
        # compiled path recompiles for every new shape). Passes of at most 32 GB (a few GB per 128² cine): the
        # stack fits an 80 GB GPU in two passes.
        bench_128 += ["--in-process", "--size", "128", "--slices", "10", "1", "--budget-mb", "32768", "--repeats",
                      "3", "--stack-repeats", "3", "--paths", "reference fp32", "engine bf16 auto",
                      "engine bf16 triton graph", "engine bf16 compiled triton-step", "reference fp32 compiled",
                      "engine bf16", "engine bf16 cuda graph"]  # fmt: skip
    fps_json = out / "fps_vs_params_device.json"
    # --path engine: the Engine with its best backend where it applies, eager models elsewhere; auto would compile
    # the other members with torch.compile, minutes that the device check does not have.
    fps = [python, "benchmarks/fps_vs_params.py", "--out", str(fps_json), "--repeats", "5", "--path", "engine"]
    fps += [] if cpu_rehearsal else ["--in-process"]
    if cpu_rehearsal:
        fps += ["--members", "bicubic-x4", "lite-x4-no-ror", "--frames", "4", "--size", "12", "--repeats", "1"]
    return {"bench_engine": (bench, bench_json), "bench_engine_tma": (tma, tma_json),
            "bench_engine_autotune": (autotune, autotune_json), "profile": (profile, profile_json),
            "bench_engine_1": (single, single_json), "bench_engine_128": (bench_128, bench_128_json),
            "fps_vs_params": (fps, fps_json)}  # fmt: skip


def run_tests(args: argparse.Namespace, python: str, left) -> list[dict]:
    """The GPU tests (and memcheck when one fails)."""
    steps = []
    junit = args.out / "gpu_tests.xml"
    marker = "gpu" if not args.cpu_rehearsal else "gpu or not gpu"
    # The rehearsal tests the step's plumbing on one file's quick tests (its interpreter tests take minutes).
    test_files = [] if not args.cpu_rehearsal else ["tests/test_convlstm.py", "-k", "not interpreter"]
    # Parallel workers where pytest-xdist is installed: the GPU tests' time is mostly Triton compiling its
    # autotuning candidates on the CPU, with a tile test per configuration.
    workers = ["-n", "4"] if importlib.util.find_spec("xdist") and not args.cpu_rehearsal else []
    steps.append(run_step("gpu_tests", [python, "-m", "pytest", "-v", "-rs", "--durations=0", "-m", marker, *workers,
                                        f"--junitxml={junit}", *test_files], left(SHARES["gpu_tests"]),
                          args.out))  # fmt: skip
    sanitizer = shutil.which("compute-sanitizer")
    if steps[-1]["status"].startswith("failed") and sanitizer and not args.cpu_rehearsal:
        # A failing GPU test: memcheck names the first bad access of the CUDA C++ kernels (which nothing else can
        # see: a fault there only shows as a later error).
        kernel_tests = ["tests/test_convlstm.py", "tests/test_phase_fusion.py"]
        steps.append(run_step("memcheck", [sanitizer, "--tool", "memcheck", "--print-limit", "20", python, "-m",
                                           "pytest", "-q", "-x", "-m", "gpu", "-k", "cuda", *kernel_tests],
                              min(90.0, left(0.9)), args.out))  # fmt: skip
    return steps


SKIPPABLE = (*RUNS["all"], "autotune_warmup")


def skipped(name: str, why: str = "--skip") -> dict:
    print(f"[device-check] {name}: skipped ({why})", flush=True)
    return {"step": name, "status": f"skipped ({why})", "seconds": 0.0, "json_lines": []}


def install_carried_wheels(python: str, out: Path) -> dict:
    """The wheels a run carried in .wheels/ or .whl/ (pydicom, nibabel: the GPU image lacks them and has no
    network), installed offline; none carried: the tests that need them skip with the reason (tests/conftest.py)."""
    wheels = sorted(str(w) for folder in (".wheels", ".whl") for w in (ROOT / folder).glob("*.whl"))
    if not wheels:
        return skipped("wheels", "none carried: the tests needing pydicom, nibabel or pynetdicom skip")
    return run_step("wheels", [python, "-m", "pip", "install", "--no-index", "--no-deps", *wheels], 60, out)


def stack_rows(result: dict) -> list[dict]:
    """The stack steps' rows together, a path's first row kept (each step measures its own reference first)."""
    rows, seen = [], set()
    for name in ("bench_engine", "bench_engine_tma", "bench_engine_autotune"):
        for row in (result.get(name) or {}).get("rows", []):
            if (row["slices"], row["path"]) not in seen:
                seen.add((row["slices"], row["path"]))
                rows.append(row)
    return rows


def assemble(result: dict, commands: dict, steps: list[dict]) -> dict:
    """The device check's JSON as it stands: every finished step, each benchmark's JSON as far as it was written,
    the kernels' rows (the TMA tiles' after the others), the targets from the stack rows measured so far."""
    result["steps"] = steps
    by_name = {step["step"]: step for step in steps}
    for name, (_, path) in commands.items():
        if name not in by_name or by_name[name]["status"].startswith("skipped"):
            continue  # a file there from another invocation is not this run's
        with contextlib.suppress(OSError, ValueError):  # a step that timed out may have left nothing, or half
            result[name] = json.loads(path.read_text())
    matmul = by_name.get("matmul_rate", {}).get("json_lines")
    if matmul:
        result["matmul_rate"] = matmul[-1]
    kernels = []
    for name in ("kernels", "kernels_tma"):
        lines = by_name.get(name, {}).get("json_lines", [])
        # The final list when the step finished, else the rows it printed before it was stopped.
        kernels += lines[-1] if lines and isinstance(lines[-1], list) else lines
    result["kernels"] = kernels
    if "matmul_rate" in result and stack_rows(result):
        result["targets"] = targets(stack_rows(result), result["matmul_rate"]["tflops"])
    return result


def write_json(path: Path, result: dict) -> None:
    """Replaced whole, never half-written: the device tool may kill the check at any moment."""
    part = path.with_suffix(".json.part")
    part.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(part, path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "benchmarks" / "results"))
    parser.add_argument("--run", choices=tuple(RUNS), default="first",
                        help="first: the rows that decide auto and the targets, the untried tiles, the GPU tests "
                             "(fits 6 minutes); later: the max-autotune reference, profile, one cine, 128x128, "
                             "Fig. 4a; all: both")  # fmt: skip
    parser.add_argument("--budget-s", type=float, default=330, help="total wall-time budget")
    parser.add_argument("--cpu-rehearsal", action="store_true", help="toy sizes on a CPU, to test this script")
    parser.add_argument(
        "--json",
        type=Path,
        help="where device_check.json goes (default: under --out); on the "
        "device tool $OUT/device_check.json, so that it comes back whenever the check stops",
    )
    parser.add_argument("--commit", default=current_commit(), help="the commit being checked, for the record "
                        "(default: git's HEAD where the copy has its .git)")  # fmt: skip
    parser.add_argument(
        "--stack-paths",
        nargs="+",
        metavar="PATH",
        help="the stack step's paths instead of its own list (bench_engine.py's names), in this order",
    )
    parser.add_argument("--skip", nargs="+", default=[], choices=SKIPPABLE, metavar="STEP",
                        help="steps to leave out, e.g. a focused rerun after a fix (build, facts and the matmul rate "
                             f"always run): {', '.join(SKIPPABLE)}")  # fmt: skip
    return parser


def main() -> None:
    args = build_parser().parse_args()
    # `timeout` ends a run with SIGTERM: as an exception, so that the cleanup of the background warm-up runs.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    args.out.mkdir(parents=True, exist_ok=True)
    # One Triton cache for every step, the warm-up included (inherited by each child): the warm-up's compiled
    # max-autotune candidates reach the step that measures them through it. The measured steps' Inductor cache
    # is their own.
    scratch = Path(tempfile.gettempdir())
    os.environ.setdefault("TRITON_CACHE_DIR", str(scratch / "cmrvsr_device_check_triton"))
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(scratch / "cmrvsr_device_check_inductor"))
    start = time.perf_counter()

    def left(share: float) -> float:
        return max(5.0, (args.budget_s - (time.perf_counter() - start)) * share)

    python = sys.executable
    commands = benchmark_commands(python, args.out, args.cpu_rehearsal, args.stack_paths)
    result = {"benchmark": "device_check", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "rehearsal_on_cpu": args.cpu_rehearsal, "commit": args.commit, "run": args.run,
              "host": platform.node(), "complete": False, "facts": {}}  # fmt: skip
    steps: list[dict] = []
    json_path = args.json or args.out / "device_check.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)

    def record(*done: dict) -> None:  # after every step: a check killed at any point keeps what it measured
        steps.extend(done)
        result["total_s"] = round(time.perf_counter() - start, 1)
        write_json(json_path, assemble(result, commands, steps))

    record(install_carried_wheels(python, args.out))
    build_env = {"CMRVSR_BUILD_CUDA": "1"} if not args.cpu_rehearsal else {"CMRVSR_SKIP_CUDA_BUILD": "1"}
    if not args.cpu_rehearsal:
        build_env["CMRVSR_CUDA_ARCHS"] = local_cuda_arch()  # this GPU's arch only: a fifth of the nvcc time
    # An editable install, offline: maps kernels/ and export/ into the package and builds the extensions.
    install = [python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-e", "."]
    record(run_step("build", install, left(0.3), args.out, build_env))
    facts_step = run_step("facts", [python, "-c", FACTS], 60, args.out)  # after the build: the extension's facts
    result["facts"] = next(iter(facts_step["json_lines"][-1:]), {})
    record(facts_step)
    record(run_step("matmul_rate", [python, "-c", MATMUL_RATE], 60, args.out))  # the roofline, uncontended

    interpret = {"TRITON_INTERPRET": "1"} if args.cpu_rehearsal else {}
    autotuning = {"TRITON_PRINT_AUTOTUNING": "1"}  # the chosen configs and the autotuning time, in the log
    kernels = [python, "benchmarks/kernel_timing.py", *(["--cpu-rehearsal"] if args.cpu_rehearsal else [])]
    planned = list(RUNS[args.run])
    # The background warm-up compiles the max-autotune reference's candidates beside the GPU tests (correctness
    # only), for the step that measures it after them: only where a run has both.
    warmup_wanted = {"gpu_tests", "bench_engine_autotune"} <= set(planned) - set(args.skip)
    warmup_wanted = warmup_wanted and "autotune_warmup" not in args.skip
    warmup = None
    try:
        for name in planned:
            if name in args.skip:
                record(skipped(name))
            elif name == "kernels":
                record(run_step(name, kernels, left(SHARES[name]), args.out, {**interpret, **autotuning}))
            elif name == "kernels_tma":
                record(run_step(name, [*kernels, "--tma"], left(SHARES[name]), args.out, {**interpret, **autotuning}))
            elif name == "gpu_tests":
                if warmup_wanted:
                    warmup = start_background("autotune_warmup", autotune_warmup_command(python, args.out,
                                              args.cpu_rehearsal), args.out, warmup_environment())  # fmt: skip
                record(*run_tests(args, python, left))
                if warmup:  # before anything is timed: its remaining time, at most a share, then it is stopped
                    record(finish_background(warmup, min(60.0, left(0.2))))
                    warmup = None
            else:
                command, output = commands[name]
                output.unlink(missing_ok=True)  # an earlier invocation's file must not pass for this step's
                record(run_step(name, command, left(SHARES[name]), args.out))
    finally:  # an error or a signal must not leave the warm-up running on the GPU
        if warmup:
            stop_background(warmup)
    result["complete"] = True
    record()
    summary = report(result)  # the tables, from the JSON just written
    (args.out / "device_check.md").write_text(summary)
    print(summary)
    print(f"[device-check] wrote {json_path} and device_check.md in {result['total_s']} s")


if __name__ == "__main__":
    main()
