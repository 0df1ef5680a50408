"""Training: a short run, its checkpoints and logs, --resume, and two DDP processes on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cmrvsr_fast.cli import main
from cmrvsr_fast.model.checkpoint import load_checkpoint

TINY = ["--preset", "lite-x4", "--data", "phantom:2", "--size", "48", "--crop", "8", "--batch", "2"]


def test_short_run_writes_checkpoints_and_logs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out), "--steps", "4", "--validate-every", "2"]) == 0
    assert "validation CardiacPSNR" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} >= {"best.safetensors", "best.json", "last.safetensors", "last.json",
                                               "last_state.pt", "log.csv", "log.json"}  # fmt: skip
    _, card = load_checkpoint(out / "last.safetensors")
    assert card.config.features == 16 and card.training["iterations"] == 4 and card.training["preset"] == "lite-x4"
    assert card.training["recipe"]["batch"] == 2 and "CPU" in card.training["hardware"]
    assert card.metrics["validation"]["step"] == 4 and "bicubic_cardiac_psnr" in card.metrics["validation"]
    lines = (out / "log.csv").read_text().splitlines()
    assert lines[0].startswith("step,epoch,loss") and len(lines) == 3

    # A second run over the same folder must be asked for explicitly.
    assert main(["train", *TINY, "--out", str(out), "--steps", "6"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", *TINY, "--out", str(out), "--steps", "6", "--validate-every", "2", "--resume"]) == 0
    history = json.loads((out / "log.json").read_text())["history"]
    assert [row["step"] for row in history] == [2, 4, 6]


def test_resumed_card_keeps_its_origin(tmp_path: Path) -> None:
    """A run initialised from another and resumed later still says where it started, and when it was resumed."""
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["train", *TINY, "--out", str(first), "--steps", "2", "--validate-every", "2"]) == 0
    start = ["train", *TINY, "--out", str(second), "--validate-every", "2"]
    assert main([*start, "--steps", "2", "--init-from", str(first / "last.safetensors")]) == 0
    assert main([*start, "--steps", "4", "--resume"]) == 0
    training = load_checkpoint(second / "last.safetensors")[1].training
    assert training["initialised_from"] == str(first / "last.safetensors")
    assert training["resumed_at_steps"] == [2] and training["iterations"] == 4


def test_training_reduces_the_loss(tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["train", *TINY, "--out", str(out), "--steps", "40", "--validate-every", "10", "--lr", "2e-3"]
    assert main(argv) == 0
    history = json.loads((out / "log.json").read_text())["history"]
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]


@pytest.mark.slow
def test_two_ddp_processes_hold_identical_weights(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "cmrvsr_fast", "train", *TINY, "--out", str(out), "--steps", "3", "--validate-every", "3",
               "--device", "cpu"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}  # loopback only: no network here
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "log.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3
    assert summary["ddp_weights_identical"] and len(set(summary["rank_weights_sha256"])) == 1
    _, card = load_checkpoint(out / "last.safetensors")
    assert card.training["recipe"]["batch"] == 4  # 2 clips per process


def test_bfloat16_autocast_run(tmp_path: Path) -> None:
    out = tmp_path / "amp"
    assert main(["train", *TINY, "--out", str(out), "--steps", "2", "--validate-every", "2", "--amp"]) == 0
    _, card = load_checkpoint(out / "last.safetensors")
    assert card.training["recipe"]["amp_bf16"] is True
    row = json.loads((out / "log.json").read_text())["history"][-1]
    assert row["loss"] == row["loss"] and row["loss"] < 100  # finite
