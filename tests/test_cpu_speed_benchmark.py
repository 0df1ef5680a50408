"""`make bench` (benchmarks/cpu_speed.py): its verdicts from interleaved rounds, and one worker process serving
its protocol at a toy size; and the training processes' allocator setting it compares against."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import cpu_speed

from cmrvsr_fast.ops import winograd
from cmrvsr_fast.training.allocator import keep_freed_memory


def test_ratios_are_taken_round_by_round_and_checked_against_the_targets() -> None:
    paths = [cpu_speed.REFERENCE, "engine fp32", "engine bf16"]
    # Round 2 is a slow spell for everyone: per-round ratios ignore it, medians of times would not.
    times = {
        (cpu_speed.REFERENCE, "plain"): [10.0, 20.0, 10.0], ("engine fp32", "plain"): [8.0, 16.0, 9.5],
        ("engine bf16", "plain"): [4.0, 8.0, 4.0], (cpu_speed.REFERENCE, "allocator variables"): [9.0, 9.0, 9.0],
        ("engine fp32", "allocator variables"): [8.0, 8.0, 8.0], ("engine bf16", "allocator variables"): [3.0] * 3,
    }  # fmt: skip
    outputs = {path: torch.ones(2) for path in paths}
    rows = cpu_speed.summarise(paths, 1, times, outputs)
    by_path = {row["path"]: row for row in rows}
    assert by_path["engine fp32"]["plain"]["ratio_vs_reference"] == 1.25
    assert by_path["engine bf16"]["allocator_variables"]["ratio_vs_reference"] == 3.0
    verdicts = {(v["path"], v["check"]): v["met"] for v in cpu_speed.verdicts(rows)}
    assert verdicts[("engine fp32", "plain ratio >= 1.1")]
    assert verdicts[("engine bf16", "plain ratio >= 2.2")]
    assert not verdicts[("engine bf16", "plain ratio >= 0.9 × the ratio with the variables")]  # 2.5 < 0.9 × 3


def test_a_worker_serves_warmup_run_and_save(tmp_path: Path) -> None:
    spec = {"path": "engine fp32", "slices": 1, "frames": 2, "size": 8}
    worker = cpu_speed.Worker(spec, "plain")
    try:
        warmup = worker.ask("warmup")
        assert warmup["seconds"] > 0 and worker.ask("run")["seconds"] > 0
        assert warmup["runs"] == ("stepwise winograd" if winograd.available() else "stepwise direct")
        worker.ask(f"save {tmp_path / 'out.pt'}")
    finally:
        worker.close()
    assert worker.process.returncode == 0
    assert torch.load(tmp_path / "out.pt", weights_only=True).shape == (1, 2, 1, 32, 32)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_training_processes_can_keep_freed_memory() -> None:
    assert keep_freed_memory()
