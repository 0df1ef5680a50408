"""`evaluate` and the `cmrvsr-fast eval` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from dataset_helpers import write_acdc_patient

from cmrvsr_fast import CMRVSR, ModelConfig, save_checkpoint
from cmrvsr_fast.cardiac.roi import heart_box
from cmrvsr_fast.cli import main
from cmrvsr_fast.data import crop_to_multiple, degrade, generate
from cmrvsr_fast.data.datasets import phantom_records
from cmrvsr_fast.evaluation.evaluate import evaluate
from cmrvsr_fast.evaluation.metrics import cardiac_psnr, cardiac_ssim, psnr, ssim


def test_bicubic_row_is_the_metrics_of_bicubic() -> None:
    records = phantom_records(range(3, 4), (60, 60), 10)
    (row,) = evaluate(records, [3], lambda scale: None, "standard", progress=False)
    import cv2  # the dev extra; an independent bicubic

    hr = crop_to_multiple(generate(3, (60, 60), 10).cine[0])
    lr = degrade(hr, 3)
    up = np.clip(
        np.round(np.stack([cv2.resize(f.astype(np.float64), (60, 60), interpolation=cv2.INTER_CUBIC) for f in lr])),
        0,
        255,
    )
    box = heart_box(hr)
    assert row.method == "bicubic" and row.sequences == 1
    assert row.psnr == pytest.approx(psnr(up, hr), abs=1e-6)
    assert row.ssim == pytest.approx(ssim(up, hr), abs=1e-6)
    assert row.cardiac_psnr == pytest.approx(cardiac_psnr(up, hr, box), abs=1e-6)
    assert row.cardiac_ssim == pytest.approx(cardiac_ssim(up, hr, box), abs=1e-6)


def test_eval_command_with_a_preset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["eval", "--data", "phantom:1", "--size", "48", "--frames", "8", "--preset", "lite-x4",
                 "--json", str(tmp_path / "t.json"), "--quiet"])  # fmt: skip
    assert code == 0
    table = capsys.readouterr().out
    assert "bicubic" in table and "lite-x4 (untrained)" in table and "CardiacPSNR" in table
    rows = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert [(r["scale"], r["method"]) for r in rows] == [(4, "bicubic"), (4, "lite-x4 (untrained)")]
    assert rows[0]["psnr"] > rows[1]["psnr"]  # an untrained network is worse than bicubic


def test_eval_command_with_weights_on_acdc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_acdc_patient(tmp_path / "acdc", 2)
    config = ModelConfig(scale=2, features=4, lstm_layers=1, warmup=2, stages=1)
    save_checkpoint(CMRVSR(config), tmp_path / "tiny.safetensors")
    argv = [
        "eval",
        "--data",
        f"acdc:{tmp_path / 'acdc'}",
        "--scale",
        "2",
        "--weights",
        str(tmp_path / "tiny.safetensors"),
    ]
    assert main([*argv, "--quiet"]) == 0
    assert "tiny" in capsys.readouterr().out
    assert main(["eval", "--data", f"acdc:{tmp_path / 'acdc'}", "--scale", "4", "--weights",
                 str(tmp_path / "tiny.safetensors"), "--quiet"]) == 2  # fmt: skip
    assert "is a ×2 model; asked for ×4" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("data", "message"),
    [("mri:/x", "expected phantom"), ("acdc:/no/such/folder", "is not a folder"), ("folder:.github", "not a folder")],
)
def test_eval_command_refuses_bad_data(data: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--data", data, "--quiet"]) == 2
    assert message in capsys.readouterr().err


def test_eval_command_names_an_empty_dataset_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--data", f"dsb:{tmp_path}", "--quiet"]) == 2
    assert "no DSB15 series" in capsys.readouterr().err


def test_phantom_command_writes_cines_and_refuses_to_overwrite(tmp_path: Path, capsys) -> None:
    assert main(["phantom", str(tmp_path / "out"), "--seed", "3", "--count", "2", "--size", "48", "--frames", "8"]) == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [f"phantom0000{s}.{e}" for s in (3, 4) for e in ("json", "npy", "png")]
    cine = np.load(tmp_path / "out" / "phantom00003.npy")
    assert cine.shape == (1, 8, 48, 48) and np.array_equal(cine, generate(3, (48, 48), 8).cine)
    assert json.loads((tmp_path / "out" / "phantom00003.json").read_text())["es"] == generate(3, (48, 48), 8).es
    assert main(["phantom", str(tmp_path / "out"), "--seed", "4", "--size", "48", "--frames", "8"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["phantom", str(tmp_path / "out"), "--seed", "4", "--size", "48", "--frames", "8", "--overwrite"]) == 0
