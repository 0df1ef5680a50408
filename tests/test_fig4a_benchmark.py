"""The Fig. 4a sweep (benchmarks/fps_vs_params.py, run as a program at toy sizes), the FLOP counter it reports
(model/cost.py) and the equal-budget training bookkeeping of benchmarks/zoo_train.py (training/runs.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cmrvsr_fast import ModelConfig
from cmrvsr_fast.model import zoo
from cmrvsr_fast.model.cost import counted_flops_per_frame, inference_flops
from cmrvsr_fast.training.runs import finished_with_budget

ROOT = Path(__file__).resolve().parents[1]


def test_counted_flops_agree_with_the_spec_cost_where_the_schedules_agree() -> None:
    # With S = 1 and no warm-up, the reference computes exactly what docs/model.md counts: per extended frame the
    # InBlock, ConvLSTM and RefineBlock, and the OutBlock per output frame.
    config = ModelConfig.from_name("lite-x4").replace(stages=1, warmup=0)
    counted = counted_flops_per_frame(zoo.build_model(config).eval(), config, frames=5, size=32)
    assert counted == pytest.approx(inference_flops(config, 5, 32, 32) / 5, rel=1e-6)


def test_sweep_writes_rows_quality_and_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    quality = tmp_path / "zoo_training.json"
    held_out = {"cardiac_psnr": 21.5, "cardiac_ssim": 0.71}
    quality.write_text(json.dumps({
        "budget": {"steps": 3, "batch": 2}, "hardware": "test", "date": "2026-11-25", "held_out": {"seeds": "x"},
        "members": {"lite-x4-no-ror": {"held_out": held_out}},
        "bicubic": {"bicubic-x4": {"cardiac_psnr": 20.0, "cardiac_ssim": 0.68}},
    }))  # fmt: skip
    out = tmp_path / "fig.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "fps_vs_params.py"), "--members", "bicubic-x4",
               "lite-x4-no-ror", "edsr-baseline-x2", "--frames", "3", "--size", "8", "--repeats", "1",
               "--quality", str(quality), "--out", str(out)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    rows = {row["name"]: row for row in result["rows"]}
    assert list(rows) == ["bicubic-x4", "lite-x4-no-ror", "edsr-baseline-x2"]
    assert rows["bicubic-x4"]["parameters"] == 0 and rows["bicubic-x4"]["cardiac_psnr"] == 20.0
    lite = rows["lite-x4-no-ror"]
    assert lite["parameters"] == zoo.parameter_count(zoo.build_model(zoo.config_for("lite-x4-no-ror")))
    assert lite["cardiac_psnr"] == 21.5 and lite["family"] == "ablation" and lite["path"] == "eager (fp32)"
    assert rows["edsr-baseline-x2"]["cardiac_psnr"] is None  # not trained: no quality, hollow in the plot
    for row in rows.values():
        assert row["fps"] > 0 and row["latency_s_per_cine"] == pytest.approx(3 / row["fps"], rel=0.01)
        assert row["gflops_per_frame"] >= 0 and row["peak_memory_mb"] >= 0
    assert result["quality"]["budget"] == {"steps": 3, "batch": 2} and result["input"]["lr_size"] == 8
    assert result["complete"] is True and result["sweep_wall_s"] > 0
    assert out.with_suffix(".png").stat().st_size > 10_000
    out.with_suffix(".png").unlink()
    replot = [sys.executable, str(ROOT / "benchmarks" / "fps_vs_params.py"), "--replot", str(out)]
    subprocess.run(replot, check=True, capture_output=True, timeout=120)
    assert out.with_suffix(".png").stat().st_size > 10_000  # redrawn from the JSON alone


def test_a_finished_run_is_recognised_by_its_budget(tmp_path: Path) -> None:
    run = tmp_path / "edsr"
    run.mkdir()
    assert not finished_with_budget(run, 300, 4, 4e-4)
    recipe = {"optimiser": "Adam lr=0.0004 weight_decay=0"}
    (run / "last.json").write_text(json.dumps({"training": {"budget": {"steps": 300, "batch": 4}, "recipe": recipe}}))
    (run / "log.json").write_text("{}")
    assert (
        finished_with_budget(run, 300, 4, 4e-4)
        and not finished_with_budget(run, 300, 8, 4e-4)
        and not finished_with_budget(run, 200, 4, 4e-4)
    )
    assert not finished_with_budget(run, 300, 4, 1e-4)  # another learning rate is another run


def test_unknown_members_are_refused(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fps_vs_params.py"), "--members", "srcnn-x4",
                           "--out", str(tmp_path / "x.json")], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2 and "unknown zoo members" in done.stderr
    assert torch.__version__  # the sweep imports only what the package already needs, plus matplotlib
