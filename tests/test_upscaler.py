"""cmrvsr_fast.load / Upscaler, the embedded default weights, and `cmrvsr-fast demo`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import cmrvsr_fast
from cmrvsr_fast import CMRVSR, ModelCard, ModelConfig, phase_code, save_checkpoint
from cmrvsr_fast.cli import main
from cmrvsr_fast.data import bicubic_resize, clip_and_scale, degrade, generate
from cmrvsr_fast.inference.consistency import DEFAULT_STRENGTH, enforce_consistency, reproduction_psnr
from cmrvsr_fast.inference.runner import EngineRunner, NetworkRunner
from cmrvsr_fast.inference.upscaler import Upscaler, default_weights_path
from cmrvsr_fast.model.checkpoint import sha256_file


@pytest.fixture
def tiny_weights(tmp_path: Path) -> Path:
    torch.manual_seed(3)
    config = ModelConfig(scale=2, features=4, lstm_layers=1, warmup=2, stages=2)
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(CMRVSR(config), path, ModelCard(config, normalisation=(50.0, 40.0)))
    return path


def test_upscale_works_in_the_acquisitions_units(tiny_weights: Path) -> None:
    upscaler = cmrvsr_fast.load(tiny_weights, device="cpu", precision="fp32")
    cine = generate(1, (36, 36), 10).cine[0] * 16.0 + 100.0  # 12-bit-like units
    out = upscaler.upscale(cine, ed=0, es=4)
    assert out.shape == (10, 72, 72) and out.dtype == np.float32
    assert out.min() >= cine.min() and out.max() <= cine.max()

    # The same numbers by hand: clipped at the 99.5 % point and scaled to 0–255 as the training data are,
    # normalised, the model, moved towards agreement with the input by the consistency strength, back to the
    # input's units, plus the bicubic-upscaled excess above the ceiling.
    low, high = cine.min(), np.quantile(cine, 0.995)
    grey = (np.minimum(cine, high) - low) / (high - low) * 255
    with torch.no_grad():
        x = torch.from_numpy(((grey - 50.0) / 40.0).astype(np.float32))[None, :, None]
        p = torch.from_numpy(phase_code(10, 0, 4).astype(np.float32))[None]
        sr = upscaler.model(x, p)[0, :, 0].numpy() * 40.0 + 50.0
    excess = bicubic_resize(np.maximum(cine - high, 0), 72, 72)
    assert excess.max() > 10  # the phantom's brightest pixels lie above the ceiling
    for strength in (0.0, DEFAULT_STRENGTH, 1.0):
        agreed = enforce_consistency(sr, grey, 2, strength)
        expected = np.clip(low + agreed / 255 * (high - low) + excess, cine.min(), cine.max())
        np.testing.assert_allclose(upscaler.upscale(cine, ed=0, es=4, consistency=strength), expected, rtol=1e-5,
                                   atol=1e-3)  # fmt: skip
    # Full consistency: the network's part of the output, degraded again, is the network's input.
    assert reproduction_psnr(enforce_consistency(sr, grey, 2), grey, 2) > 100 > reproduction_psnr(sr, grey, 2)
    with pytest.raises(ValueError, match="consistency must lie"):
        upscaler.upscale(cine, consistency=2.0)


def test_upscale_feeds_the_network_as_training_does(tiny_weights: Path, monkeypatch) -> None:
    """The network's input is the training data's preparation of the cine (clip_and_scale, before rounding):
    never above 255, whatever the input's brightest pixels."""
    upscaler = cmrvsr_fast.load(tiny_weights, device="cpu", precision="fp32")
    seen = []
    engine_call = type(upscaler.engine).__call__
    monkeypatch.setattr(
        type(upscaler.engine), "__call__", lambda self, x, *a, **k: seen.append(x) or engine_call(self, x, *a, **k)
    )
    cine = (generate(4, (36, 36), 10).cine[0] * 9).astype(np.int16)  # integer units: the histogram rule
    upscaler.upscale(cine, ed=0, es=4)
    grey = seen[0][0, :, 0].numpy() * 40.0 + 50.0
    np.testing.assert_allclose(grey, clip_and_scale(cine), atol=0.5 + 1e-3)  # clip_and_scale also rounds
    assert grey.max() <= 255.0 + 1e-3


def test_upscale_stacks_constant_cines_and_bad_input(tiny_weights: Path) -> None:
    upscaler = cmrvsr_fast.load(tiny_weights, device="cpu")
    stack = generate(2, (24, 24), 8, slices=3).cine
    assert upscaler.upscale(stack).shape == (3, 8, 48, 48)
    np.testing.assert_array_equal(upscaler.upscale(np.full((8, 12, 12), 7.0)), np.full((8, 24, 24), 7.0))
    with pytest.raises(ValueError, match="expected a"):
        upscaler.upscale(np.zeros((12, 12)))
    with pytest.raises(ValueError, match="NaN"):
        upscaler.upscale(np.full((8, 12, 12), np.nan))


def test_load_passes_the_engine_options_through(tiny_weights: Path) -> None:
    assert cmrvsr_fast.load(tiny_weights, device="cpu", cudnn_benchmark=True).engine.cudnn_benchmark is True
    assert cmrvsr_fast.load(tiny_weights, device="cpu").engine.cudnn_benchmark is False


def test_an_upscaler_runs_any_network_runner(tiny_weights: Path) -> None:
    """One constructor over the runner protocol: a checkpoint's EngineRunner, wrapped again, gives the same
    output as `load`'s Upscaler, and the Upscaler's facts are the runner's."""
    loaded = cmrvsr_fast.load(tiny_weights, device="cpu", precision="fp32")
    assert isinstance(loaded.runner, EngineRunner) and isinstance(loaded.runner, NetworkRunner)
    again = Upscaler(loaded.runner)
    assert (again.card, again.device, again.model) == (loaded.card, loaded.device, loaded.model)
    assert again.precision == "fp32"
    cine = np.random.default_rng(0).uniform(0, 900, (6, 12, 12))
    np.testing.assert_array_equal(again.upscale(cine, es=3), loaded.upscale(cine, es=3))


def test_load_refuses_other_formats(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="safetensors"):
        cmrvsr_fast.load(tmp_path / "model.pth")


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_embedded_defaults_are_shipped_intact(scale: int) -> None:
    path = default_weights_path(scale)
    assert path.is_file(), f"the embedded ×{scale} default is missing from cmrvsr_fast/weights/"
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["weights_sha256"] == sha256_file(path)
    assert path.stat().st_size < 8 * 2**20  # a few MB at most
    training = card["training"]
    assert training["iterations"] > 0 and training["wall_time_s"] > 0 and training["hardware"]
    # Trained on the synthetic generator alone, so that `make train-default` regenerates it from the repository.
    assert training["data"].startswith("synth/") and card["metrics"]["held_out"]["synthetic"]["rows"]
    upscaler = cmrvsr_fast.load(scale=scale, device="cpu")
    assert upscaler.scale == scale and upscaler.model.config == ModelConfig.from_name(training["preset"])


def test_load_checks_the_scale_of_given_weights(tiny_weights: Path) -> None:
    assert cmrvsr_fast.load(tiny_weights, device="cpu", scale=2).scale == 2
    with pytest.raises(ValueError, match="×2 model; asked for ×4"):
        cmrvsr_fast.load(tiny_weights, device="cpu", scale=4)
    with pytest.raises(ValueError, match="scale must be"):
        default_weights_path(5)


@pytest.mark.parametrize("scale", [2, 4])
def test_embedded_default_beats_bicubic_in_either_orientation(scale: int) -> None:
    """A sanity check on one small held-out synthetic case, as acquired and transposed: the default has no
    preferred orientation (the full cross-domain table is measured by benchmarks/embed_default.py and
    benchmarks/eval_cines.py)."""
    from cmrvsr_fast.cardiac.roi import heart_box
    from cmrvsr_fast.data.synth import HELD_OUT_SEEDS, synth_case
    from cmrvsr_fast.evaluation.evaluate import bicubic_upscale
    from cmrvsr_fast.evaluation.metrics import cardiac_psnr, to_grey_levels

    case = synth_case(HELD_OUT_SEEDS + 100, display=96, frames=12, kind="sax")
    upscaler = cmrvsr_fast.load(scale=scale, device="cpu", precision="fp32")
    gains = []
    for hr in (case.cine, np.ascontiguousarray(case.cine.swapaxes(1, 2))):
        lr, box = degrade(hr, scale), heart_box(hr)
        sr = to_grey_levels(upscaler.upscale(lr, ed=0, es=case.es))
        gains.append(cardiac_psnr(sr, hr, box) - cardiac_psnr(to_grey_levels(bicubic_upscale(lr, scale)), hr, box))
    # One sequence's gain moves by up to ~0.3 dB either way when transposed (real cines, all three defaults,
    # no sign preferred); the defect guarded against cost 1.4 dB in one orientation.
    assert min(gains) > 0 and abs(gains[0] - gains[1]) < 0.5, gains


def test_demo_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--size", "96", "--frames", "12", "--slices", "1", "--json", str(out / "m.json")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "bicubic" in printed and "CardiacPSNR gain over bicubic" in printed
    assert {p.name for p in out.iterdir()} == {
        "sr.nii.gz",
        "bicubic.nii.gz",
        "lr.nii.gz",
        "hr.nii.gz",
        "montage.png",
        "m.json",
    }
    body = json.loads((out / "m.json").read_text())
    assert [row["method"] for row in body["rows"]] == ["bicubic", "cmrvsr"] and body["scale"] == 4
    import nibabel as nib

    sr, lr, hr = (nib.load(out / f"{name}.nii.gz") for name in ("sr", "lr", "hr"))
    assert sr.shape == (96, 96, 1, 12) and lr.shape == (24, 24, 1, 12)
    # The files overlay: an LR voxel's centre is the centre of its 4×4 block of HR voxels, and SR lies on HR's grid.
    assert np.allclose(lr.affine @ [0, 0, 0, 1], hr.affine @ [1.5, 1.5, 0, 1])
    assert np.allclose(lr.affine @ [5, 7, 0, 1], hr.affine @ [21.5, 29.5, 0, 1])
    assert np.allclose(sr.affine, hr.affine)


def test_precision_choice(tiny_weights: Path) -> None:
    from cmrvsr_fast.inference.runner import native_bf16

    auto = cmrvsr_fast.load(tiny_weights, device="cpu")
    assert auto.precision == ("bf16" if native_bf16(torch.device("cpu")) else "fp32")
    cine = generate(1, (36, 36), 10).cine[0]
    exact = cmrvsr_fast.load(tiny_weights, device="cpu", precision="fp32").upscale(cine, es=4)
    fast = cmrvsr_fast.load(tiny_weights, device="cpu", precision="bf16").upscale(cine, es=4)
    assert np.linalg.norm(fast - exact) / np.linalg.norm(exact) < 1e-2
    with pytest.raises(ValueError, match="precision"):
        cmrvsr_fast.load(tiny_weights, device="cpu", precision="int8")


def test_compiled_upscaler_matches_the_eager_one_at_every_shape(tiny_weights: Path, monkeypatch) -> None:
    # Two compilations per compiled piece at most (one for many cines, one for a single cine); static shapes would
    # need one per size here and, with fullgraph=True, fail past the limit.
    torch._dynamo.reset()
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 2)
    eager = cmrvsr_fast.load(tiny_weights, device="cpu", precision="fp32")
    compiled = cmrvsr_fast.load(tiny_weights, device="cpu", precision="fp32", compile=True)
    assert compiled.engine._lstm_step is not compiled.engine._lstm_step_eager  # the compiled wrapper is in use
    # A job meets many sizes: dynamic shapes compile once (twice: one cine is specialised), never per size.
    for slices, size in [(2, 24), (1, 24), (3, 32), (2, 28), (1, 36)]:
        stack = generate(slices, (size, size), 8).cine
        expected = eager.upscale(stack, es=3)
        assert np.linalg.norm(compiled.upscale(stack, es=3) - expected) / np.linalg.norm(expected) < 1e-5
