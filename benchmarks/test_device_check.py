"""The device check's benchmark command lines parse with their scripts' own parsers, on both branches (a GPU's
and the CPU rehearsal's): the rehearsal runs only its own branch, and a wrong argument in the GPU branch would
cost a GPU run its whole engine benchmark."""

from __future__ import annotations

import importlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import device_check as device_check_module
import pytest

BENCHMARKS = Path(__file__).resolve().parent  # pytest puts a test's own folder on sys.path: the scripts import


@pytest.fixture(scope="module")
def device_check():
    return device_check_module


@pytest.mark.parametrize("cpu_rehearsal", [False, True], ids=["on-a-gpu", "cpu-rehearsal"])
def test_every_benchmark_command_parses(device_check, tmp_path: Path, cpu_rehearsal: bool) -> None:
    commands = device_check.benchmark_commands("python", tmp_path, cpu_rehearsal)
    assert set(commands) == set(device_check.BENCHMARK_STEPS)
    assert set(device_check.BENCHMARK_STEPS) <= set(device_check.RUNS["all"])
    parsed = {}
    for name, (command, json_path) in commands.items():
        script = Path(command[1])
        assert (BENCHMARKS.parent / script).is_file(), script
        module = importlib.import_module(script.stem)
        parsed[name] = module.build_parser().parse_args(command[2:])  # SystemExit on any unknown argument
        assert parsed[name].out == json_path
    if not cpu_rehearsal:
        bench = parsed["bench_engine"]
        assert bench.slices == [10] and bench.in_process and bench.paths[0] == "reference fp32"
        assert parsed["bench_engine_1"].slices == [1] and "engine bf16 auto graph" in parsed["bench_engine_1"].paths
        # The first run's stack: the three references first, then the fastest paths and the default; no untried
        # tile and no max-autotune (minutes of compiling) among them.
        assert bench.paths[:3] == ["reference fp32", "reference fp32 compiled", "reference fp32 ieee"]
        assert {"engine bf16 auto", "engine bf16 compiled triton-step", "engine bf16 triton graph"} <= set(bench.paths)
        assert not any("tma" in path.split() or "max-autotune" in path for path in bench.paths)
        tma = parsed["bench_engine_tma"]
        assert tma.paths == ["reference fp32", *device_check.TMA_STACK_PATHS] and tma.slices == [10]
        assert parsed["bench_engine_128"].size == 128 and parsed["bench_engine_128"].slices == [10, 1]
        # Without a warm cache max-autotune may take minutes: after it only rows an earlier GPU run measured (or,
        # for a CUDA graph path, its graph-less twin), so that what it could cost is known already.
        autotune = parsed["bench_engine_autotune"]
        after = autotune.paths[autotune.paths.index(device_check.MAX_AUTOTUNE) + 1 :]
        assert autotune.paths[0] == "reference fp32" and after == list(device_check.AFTER_MAX_AUTOTUNE)
        measured = set()
        for run in sorted((BENCHMARKS / "results").glob("device_check_*_run*.json")):
            rows = (json.loads(run.read_text()).get("bench_engine") or {}).get("rows", [])
            measured |= {row["path"] for row in rows if row["slices"] == 10}
        assert all(path in measured or path.removesuffix(" graph") in measured for path in after)


@pytest.mark.parametrize("cpu_rehearsal", [False, True], ids=["on-a-gpu", "cpu-rehearsal"])
def test_the_autotune_warmup_compiles_what_the_stack_benchmark_measures(device_check, tmp_path, cpu_rehearsal):
    """The background warm-up runs the max-autotune reference on the stack benchmark's own shapes and pass budget
    (else Triton's cache would hold other kernels), with an Inductor cache of its own (its choices, made beside
    the GPU tests, must not become the measured baseline's) and the Triton cache every step shares."""
    bench_engine = importlib.import_module("bench_engine")
    warmup = bench_engine.build_parser().parse_args(
        device_check.autotune_warmup_command("python", tmp_path, cpu_rehearsal)[2:]
    )
    command, _ = device_check.benchmark_commands("python", tmp_path, cpu_rehearsal)["bench_engine_autotune"]
    bench = bench_engine.build_parser().parse_args(command[2:])
    assert warmup.paths == [device_check.MAX_AUTOTUNE]
    same = ("preset", "frames", "size", "slices", "budget_mb", "device")
    assert {k: getattr(warmup, k) for k in same} == {k: getattr(bench, k) for k in same}
    environment = device_check.warmup_environment()
    assert set(environment) == {"TORCHINDUCTOR_CACHE_DIR"} and "warmup" in environment["TORCHINDUCTOR_CACHE_DIR"]
    if not cpu_rehearsal:
        assert device_check.MAX_AUTOTUNE in bench.paths and bench.in_process and warmup.in_process


def wait_for_output(log: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not log.read_text().strip():
        time.sleep(0.1)


def test_a_background_step_is_stopped_at_its_limit_and_keeps_its_output(device_check, tmp_path) -> None:
    sleeper = [sys.executable, "-c", "import time; print('{\"started\": 1}', flush=True); time.sleep(60)"]
    job = device_check.start_background("sleeper", sleeper, tmp_path)
    wait_for_output(tmp_path / "sleeper.log")
    step = device_check.finish_background(job, wait_s=0.5)
    assert step["status"].startswith("stopped after") and step["seconds"] < 40
    assert step["json_lines"] == [{"started": 1}] and job["process"].returncode is not None
    quick = device_check.start_background("quick", [sys.executable, "-c", "print('done')"], tmp_path)
    assert device_check.finish_background(quick, wait_s=30)["status"] == "ok"


def test_a_background_step_dies_with_the_check(tmp_path) -> None:
    """Even a device check killed outright (SIGKILL: the device tool's time limit) takes its warm-up with it."""
    parent = f"""
import sys, time
import device_check
from pathlib import Path
sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
job = device_check.start_background("orphan", sleeper, Path({str(tmp_path)!r}))
print("pid", job["process"].pid, flush=True)
time.sleep(120)
"""
    check = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True, cwd=BENCHMARKS)
    child = int(next(line for line in check.stdout if line.startswith("pid")).split()[1])
    assert_killing_the_parent_ends_the_child(check, child)


def test_a_benchmark_worker_dies_with_its_benchmark(tmp_path) -> None:
    """The stack benchmark's child workers (the TMA paths', even under --in-process) die with it: the device check
    SIGKILLs a step at its limit, and a worker left autotuning would skew every step after it."""
    worker = tmp_path / "worker.py"
    worker.write_text(
        f"import os, time\nopen({str(tmp_path / 'pid')!r}, 'w').write(str(os.getpid()))\ntime.sleep(120)\n"
    )
    parent = f"""
import sys
from measure import in_a_child
in_a_child({str(worker)!r}, {{}})
"""
    benchmark = subprocess.Popen([sys.executable, "-c", parent], cwd=BENCHMARKS)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (tmp_path / "pid").is_file():
        time.sleep(0.1)
    time.sleep(0.2)  # the pid file written, not only created
    assert_killing_the_parent_ends_the_child(benchmark, int((tmp_path / "pid").read_text()))


def assert_killing_the_parent_ends_the_child(parent: subprocess.Popen, child: int) -> None:
    """SIGKILL the parent (as a time limit does); its child must be gone within 20 s."""
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and alive(child):
        time.sleep(0.1)
    assert not alive(child)


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for a reaper)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_targets_compare_the_best_bf16_path_of_the_largest_stack(device_check) -> None:
    rows = [
        {"slices": 10, "path": "reference fp32", "fps": 100.0, "tflops": 10.0},
        {"slices": 10, "path": "reference fp32 compiled", "fps": 120.0, "tflops": 12.0},
        {"slices": 10, "path": "reference fp32 ieee", "fps": 50.0, "tflops": 5.0},
        {"slices": 10, "path": "reference fp32 cudnn-benchmark", "fps": 150.0, "tflops": 15.0},
        {"slices": 10, "path": "reference fp32 compiled max-autotune", "fps": 110.0, "tflops": 11.0},
        {"slices": 10, "path": "engine bf16", "fps": 300.0, "tflops": 30.0},
        {"slices": 10, "path": "engine bf16 triton graph", "fps": 600.0, "tflops": 60.0},
        {"slices": 1, "path": "engine bf16 triton graph", "fps": 900.0, "tflops": 90.0},
    ]
    targets = device_check.targets(rows, matmul_tflops=200.0)
    assert targets["best_bf16_path"] == "engine bf16 triton graph"
    assert targets["vs_reference_eager_fp32"] == 6.0 and targets["vs_reference_compiled"] == 5.0
    assert targets["vs_reference_eager_ieee_fp32"] == 12.0
    assert targets["with_cudnn_benchmark"] is None  # no engine row with the mode
    rows.append({"slices": 10, "path": "engine bf16 auto cudnn-benchmark", "fps": 900.0, "tflops": 90.0})
    targets = device_check.targets(rows, matmul_tflops=200.0)
    # Like against like: the mode's rows never become the targets' best path, and get their own block.
    assert targets["best_bf16_path"] == "engine bf16 triton graph" and targets["vs_reference_eager_fp32"] == 6.0
    assert targets["with_cudnn_benchmark"] == {
        "best_bf16_path": "engine bf16 auto cudnn-benchmark",
        "vs_reference_eager_fp32_cudnn_benchmark": 6.0,
        "vs_reference_eager_fp32": 9.0,
        "roofline_fraction": 0.45,
    }
    assert targets["reference_compiled_path"] == "reference fp32 compiled"  # the faster compiled baseline
    assert targets["roofline_fraction"] == 0.3


def test_json_lines_survive_warnings_and_partial_output(device_check) -> None:
    stdout = 'a warning\n{"row": 1}\nnot json {\n{"row": 2\n[{"row": 1}]\n'
    assert device_check._json_lines(stdout) == [{"row": 1}, [{"row": 1}]]
    assert device_check._text(b"partial \xff") == "partial \ufffd" and device_check._text(None) == ""


def test_no_targets_without_rows(device_check) -> None:
    assert device_check.targets([], matmul_tflops=800.0) == {}


def test_isolated_paths_are_timed_in_a_child_even_in_process(device_check, tmp_path, monkeypatch):
    """A fault in a kernel that has not yet run on a GPU (the TMA tiles) poisons its process's CUDA context: in
    the in-process stack benchmark it would cost every row after it, the max-autotune reference included. And
    cuDNN's per-thread plan cache ignores the benchmark switch: in this process the cudnn-benchmark rows would
    reuse their twins' heuristic plans."""
    bench_engine = importlib.import_module("bench_engine")
    ran = []
    monkeypatch.setattr(bench_engine, "in_this_process", lambda fn, spec, workdir: ran.append(("here", spec["path"])))

    def child(script, spec):
        ran.append(("child", spec["path"]))
        raise bench_engine.MeasurementFailed("stop here")

    monkeypatch.setattr(bench_engine, "in_a_child", child)
    bench_engine.run_path({"path": "engine bf16 auto", "slices": 10}, tmp_path, in_process=True)
    with pytest.raises(bench_engine.MeasurementFailed):
        bench_engine.run_path({"path": "engine bf16 auto tma", "slices": 10}, tmp_path, in_process=True)
    with pytest.raises(bench_engine.MeasurementFailed):
        bench_engine.run_path({"path": "reference fp32 cudnn-benchmark", "slices": 10}, tmp_path, in_process=True)
    assert ran == [("here", "engine bf16 auto"), ("child", "engine bf16 auto tma"),
                   ("child", "reference fp32 cudnn-benchmark")]  # fmt: skip
    commands = device_check.benchmark_commands("python", tmp_path, cpu_rehearsal=False)
    stack = bench_engine.build_parser().parse_args(commands["bench_engine"][0][2:]).paths
    tma = bench_engine.build_parser().parse_args(commands["bench_engine_tma"][0][2:]).paths
    assert set(bench_engine.CUDNN_BENCHMARK_PATHS) <= set(stack) and set(bench_engine.TMA_PATHS) <= set(tma)


def test_a_focused_rerun_can_name_the_stack_paths(device_check, tmp_path) -> None:
    """--stack-paths replaces step 5's list on a GPU (a second run for the targets' rows only); the rehearsal keeps
    its toy list."""
    bench_engine = importlib.import_module("bench_engine")
    focused = ["reference fp32", "engine bf16 compiled triton-step", device_check.MAX_AUTOTUNE]
    for cpu_rehearsal in (False, True):
        command, _ = device_check.benchmark_commands("python", tmp_path, cpu_rehearsal, focused)["bench_engine"]
        paths = bench_engine.build_parser().parse_args(command[2:]).paths
        assert (paths == focused) != cpu_rehearsal


def test_the_step_work_behind_the_tile_rows_rates(device_check) -> None:
    """The kernels step's per-tile TFLOP/s and least-traffic GB/s, checked against a committed device check's
    figures for one bf16 step (2 directions × 10 cines, F = 64, 64²): its least traffic is h, the gates, c twice,
    h' and the weights."""
    pytest.importorskip("triton", reason="kernel_timing imports the Triton kernels")
    import torch

    kernel_timing = importlib.import_module("kernel_timing")
    flops, traffic = kernel_timing.step_work((2, 10, 64, 64, 64), torch.bfloat16)
    assert round(flops / 0.102 / 1e9) == 237
    pixels = 2 * 10 * 64 * 64
    assert traffic == pixels * 64 * (2 + 8 + 8 + 2) + 2 * 9 * 64 * 256 * 2


def report_of(result_json: Path) -> str:
    """The Markdown `benchmarks/device_check_report.py` prints for a device check's JSON, run as a program."""
    command = [sys.executable, str(BENCHMARKS / "device_check_report.py"), str(result_json)]
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=120).stdout


def test_the_report_tables_what_a_run_measured(tmp_path) -> None:
    """The Markdown the device check prints and writes beside its JSON: from a committed device check's JSON, its
    numbers as they are there; from a run stopped early, each missing section says so instead of failing."""
    committed = BENCHMARKS / "results" / "device_check_2026-11-26_h200_run4.json"
    text = report_of(committed)
    assert text.startswith("# Device check: NVIDIA H200") and "commit aded69c" in text
    assert "**engine bf16 compiled triton-step graph**" in text and "| vs_reference_eager_fp32 | 1.77 | 5.0 |" in text
    stack = text.split("## Stack, 64×64 LR")[1].split("##")[0]
    rows = json.loads(committed.read_text())["bench_engine"]["rows"]
    assert stack.count("\n| ") - 2 == len(rows)  # a line per row, after the header's two
    assert "| engine bf16 compiled triton-step | 10 | 0.168 | 1781 | 170 | 1.77 | 21.6 | 7.1e-03 |" in stack
    assert "| convlstm_layer | [42, 10, 64, 64, 64] | torch.bfloat16 | triton_ms_per_step 0.102," in text
    assert "_step_kernel | 36.77 | 21.8 % | 378 |" in text  # the profile's first kernel of the best path
    early = tmp_path / "stopped.json"
    early.write_text(json.dumps({"steps": [{"step": "build", "status": "ok", "seconds": 20.0}], "facts": {}}))
    stopped = report_of(early)
    assert "| build | ok | 20.0 |" in stopped and "not computed" in stopped and "no rows" in stopped
    assert "no profile" in stopped


def test_the_json_is_rewritten_after_every_step(device_check, tmp_path, monkeypatch) -> None:
    """A check killed at any moment keeps what it measured: when each step starts, device_check.json already
    holds every step before it; the kernels' rows and the stack rows so far are assembled into it."""
    seen_before = {}

    def fake_step(name, command, limit_s, out, env=None):
        path = out / "device_check.json"
        seen_before[name] = [s["step"] for s in json.loads(path.read_text())["steps"]] if path.exists() else None
        lines = {"matmul_rate": [{"tflops": 800.0}], "kernels": [[{"op": "convlstm_layer", "ms": 1.0}]],
                 "kernels_tma": [{"op": "convlstm_step_nhwc_tile", "ms": 2.0}]}.get(name, [])  # fmt: skip
        if name == "bench_engine":
            rows = [
                {"slices": 10, "path": "reference fp32", "fps": 10.0, "tflops": 100.0, "latency_s": 30.0},
                {"slices": 10, "path": "engine bf16 auto", "fps": 20.0, "tflops": 200.0, "latency_s": 15.0},
            ]
            (out / "bench_engine_device.json").write_text(json.dumps({"rows": rows}))
        return {"step": name, "status": "ok", "seconds": 0.1, "json_lines": lines}

    monkeypatch.setattr(device_check, "run_step", fake_step)
    monkeypatch.setattr(device_check, "local_cuda_arch", lambda: "90")
    stale = {"rows": [{"slices": 10, "path": "engine bf16 auto", "fps": 99.0, "tflops": 1.0, "latency_s": 1.0}]}
    for name in ("bench_engine_tma", "bench_engine_autotune"):  # an earlier invocation's files in the same folder
        (tmp_path / f"{name}_device.json").write_text(json.dumps(stale))
    monkeypatch.setattr(sys, "argv", ["device_check.py", "--out", str(tmp_path), "--budget-s", "60"])
    device_check.main()
    first = ["wheels", "build", "facts", "matmul_rate", "kernels", "bench_engine", "kernels_tma", "bench_engine_tma"]
    assert seen_before["build"] == ["wheels"] and seen_before["gpu_tests"] == first
    result = json.loads((tmp_path / "device_check.json").read_text())
    assert result["complete"] and result["run"] == "first" and [s["step"] for s in result["steps"]][-1] == "gpu_tests"
    assert [row["ms"] for row in result["kernels"]] == [1.0, 2.0]  # the TMA tiles' rows after the others
    assert result["targets"]["best_bf16_path"] == "engine bf16 auto"
    assert result["targets"]["vs_reference_eager_fp32"] == 2.0  # this run's rows, not the stale files'
    assert "bench_engine_autotune" not in result and "bench_engine_tma" not in result  # removed before its step
    report = (tmp_path / "device_check.md").read_text()
    assert report.startswith("# Device check") and "| engine bf16 auto | 10 | 15 |" in report
    assert "## Stack, TMA tiles offered\n\nno rows" in report


def test_a_later_run_takes_the_rest(device_check) -> None:
    assert device_check.RUNS["later"][0] == "bench_engine_autotune"
    assert not set(device_check.RUNS["first"]) & set(device_check.RUNS["later"])


def test_a_first_run_leaves_every_step_time_within_its_budget(device_check) -> None:
    """With the default budget, the 27 s the install, facts and matmul rate took on the H200, and every step using
    its whole share, each first-run step still gets its time (the GPU tests took 62 s there), and the run ends
    inside the documented 6-minute limit."""
    left = device_check.build_parser().parse_args([]).budget_s - 27
    given = {}
    for name in device_check.RUNS["first"]:
        given[name] = left * device_check.SHARES[name]
        left -= given[name]
    assert min(given.values()) >= 20 and given["gpu_tests"] >= 55
    assert device_check.build_parser().parse_args([]).budget_s <= 360 - 20  # the report and cleanup after it
