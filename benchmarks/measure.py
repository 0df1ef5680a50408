"""What the benchmarks measure besides time (process memory, the hardware's name), and where one measurement runs:
in a child process of its own, or in this one (on a GPU, where a process start per measurement costs seconds)."""

from __future__ import annotations

import contextlib
import json
import platform
import resource
import subprocess
import sys

import torch
from child_processes import die_with_parent


class MeasurementFailed(RuntimeError):
    """One path or member could not be measured (a kernel fault, an unavailable backend): recorded, the others go
    on."""


def in_this_process(measure, *args):
    """measure(*args), any failure as MeasurementFailed; afterwards Dynamo and the CUDA cache start afresh, as in a
    process of its own (compiled functions are cached per code object: recompilations accumulated over
    measurements would reach Dynamo's recompile limit)."""
    try:
        return measure(*args)
    except Exception as error:  # any failure of one measurement is recorded; the others go on
        raise MeasurementFailed(f"{type(error).__name__}: {error}") from error
    finally:
        with contextlib.suppress(Exception):  # after a sticky CUDA error these raise too: keep the first
            torch._dynamo.reset()
            torch.cuda.empty_cache()


def in_a_child(script: str, spec: dict) -> None:
    """`python script --worker SPEC` (which writes its results where the spec says); a failure as
    MeasurementFailed with the end of the child's output."""
    # Dies with this process: a step the device check stops at its limit must not leave a worker on the GPU.
    done = subprocess.run([sys.executable, script, "--worker", json.dumps(spec)], capture_output=True, text=True,
                          preexec_fn=die_with_parent)  # fmt: skip
    if done.returncode != 0:
        raise MeasurementFailed(f"exit {done.returncode}: {(done.stdout + done.stderr).strip()[-1200:]}")


def current_rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def hardware_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}"


def hardware_kind(device: torch.device) -> str:
    """The suffix of a result file's name: cpu, or the GPU's name in lower case without spaces."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device).lower().replace("nvidia ", "").replace(" ", "-")
    return "cpu"
