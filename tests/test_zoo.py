"""The comparison zoo: Table 2 ablations of the CMRVSR family and the bicubic / EDSR-baseline / FRVSR-style
baselines, their training through the one loop, and their checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_inputs, make_model

from cmrvsr_fast import CMRVSR, ModelConfig
from cmrvsr_fast.cli import main
from cmrvsr_fast.evaluation.evaluate import bicubic_upscale
from cmrvsr_fast.inference.engine import Engine
from cmrvsr_fast.model import zoo
from cmrvsr_fast.model.baselines import BaselineConfig, FlowNet, warp
from cmrvsr_fast.model.checkpoint import ModelCard, load_checkpoint, load_weights, read_card, save_checkpoint
from cmrvsr_fast.model.config import ABLATIONS
from cmrvsr_fast.model.cost import macs_per_lr_pixel
from cmrvsr_fast.model.network import ConvLSTMCell

SMALL = ModelConfig(scale=4, features=6, lstm_layers=2, window=5, warmup=3, stages=2)


def test_every_zoo_name_builds_and_the_fig4a_sweep_covers_every_family() -> None:
    lr, phase = torch.rand(1, 2, 1, 4, 4), torch.zeros(1, 2)
    for name in zoo.FIG4A:
        config = zoo.config_for(name)
        model = zoo.build_model(config)
        assert isinstance(model, torch.nn.Module), name
        assert (zoo.parameter_count(model) == 0) == (name == "bicubic-x4"), name
        if name.startswith("paper-x4"):
            continue  # the paper-sized ablations share the lite ones' code and take seconds each on a CPU
        with torch.no_grad():
            sr = model.eval()(lr, phase)  # CMRVSR's call signature, ×r of every frame
        assert sr.shape == (1, 2, 1, 4 * config.scale, 4 * config.scale), name
    families = {zoo.family(zoo.config_for(n)) for n in zoo.FIG4A}
    assert families == {"baseline", "cmrvsr", "ablation"}
    assert {"paper-x2", "paper-x3", "paper-x4", "lite-x4"} <= set(zoo.FIG4A)
    for ablation in ("no-memory", "no-warmup", "unidirectional", "no-phase-fusion", "no-ror"):
        assert ModelConfig.from_name(f"paper-x4-{ablation}").ablations == (ablation,)
    assert ModelConfig.from_name("paper-x4").ablations == ()
    with pytest.raises(ValueError, match="unknown zoo model"):
        zoo.config_for("srcnn-x4")


def test_ablation_parameter_counts_follow_the_architecture() -> None:
    def count(name: str) -> int:
        return zoo.parameter_count(zoo.build_model(zoo.config_for(name)))

    full = count("paper-x4")
    lstm_stack = 3 * (9 * 128 * 256 + 256)  # one direction: 3 cells of Conv3×3(2F → 4F)
    assert count("paper-x4-no-memory") == count("paper-x4-no-warmup") == count("paper-x4-no-ror") == full
    fuse_full = 9 * 5 * 129 * 129 + 129 + 9 * 129 * 64 + 64
    fuse_uni = 9 * 5 * 65 * 65 + 65 + 9 * 65 * 64 + 64
    assert count("paper-x4-unidirectional") == full - lstm_stack - fuse_full + fuse_uni
    fuse_none = 9 * 128 * 128 + 128 + 9 * 128 * 64 + 64  # window 1, no phase channel
    assert count("paper-x4-no-phase-fusion") == full - fuse_full + fuse_none


def test_memory_off_keeps_the_hidden_state_out_of_the_gates() -> None:
    cell = ConvLSTMCell(4, 4, hidden_feedback=False)
    x, c = torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 5)
    h1, c1 = cell(x, torch.randn(1, 4, 5, 5), c)
    h2, c2 = cell(x, torch.randn(1, 4, 5, 5), c)
    assert torch.equal(h1, h2) and torch.equal(c1, c2)
    h3, _ = cell(x, torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 5))
    assert not torch.equal(h1, h3)  # the cell state is still carried
    with_feedback = ConvLSTMCell(4, 4)
    assert not torch.equal(
        with_feedback(x, torch.randn(1, 4, 5, 5), c)[0], with_feedback(x, torch.zeros(1, 4, 5, 5), c)[0]
    )


def test_phase_fusion_off_ignores_the_phase_and_needs_window_one() -> None:
    config = SMALL.replace(phase_fusion=False, window=1)
    model = make_model(config).eval()
    lr, phase = make_inputs(1, 5, 6, 6)
    with torch.no_grad():
        assert torch.equal(model(lr, phase), model(lr, torch.zeros_like(phase)))
        full = make_model(SMALL).eval()
        assert not torch.equal(full(lr, phase), full(lr, torch.zeros_like(phase)))
    with pytest.raises(ValueError, match="window must be 1"):
        SMALL.replace(phase_fusion=False)


def test_unidirectional_has_no_backward_stack_and_supervises_two_outputs_per_stage() -> None:
    config = SMALL.replace(bidirectional=False)
    model = make_model(config).train()
    assert model.lstm_backward is None and config.frame_channels == 7
    lr, phase = make_inputs(2, 4 + 2 * config.warmup, 8, 8)
    outputs = model(lr, phase, warmup_included=True)
    assert len(outputs) == 2 * config.stages
    target = torch.randn(2, 4, 1, 32, 32)
    model.loss(outputs, target).backward()
    assert all(p.grad is not None for p in model.lstm_forward.parameters())
    # Causality: without warm-up or a backward pass, frame 0 sees only the frames its fusion window reaches
    # (N = 2 per stage; one stage here).
    causal = make_model(config.replace(warmup=0, stages=1)).eval()
    lr, phase = make_inputs(1, 5, 8, 8)
    later = lr.clone()
    later[:, 3:] += 1.0
    with torch.no_grad():
        assert torch.equal(causal(lr, phase)[:, 0], causal(later, phase)[:, 0])
        assert not torch.equal(causal(lr, phase)[:, 1], causal(later, phase)[:, 1])


@pytest.mark.parametrize("ablation", ["no-memory", "unidirectional", "no-phase-fusion"])
def test_the_engine_refuses_the_ablations_it_does_not_implement(ablation: str) -> None:
    config = SMALL.replace(**ABLATIONS[ablation])
    with pytest.raises(ValueError, match=f"{ablation} ablation runs on the reference model"):
        Engine(CMRVSR(config))


def test_cost_counts_one_direction_for_the_unidirectional_ablation() -> None:
    full = macs_per_lr_pixel(ModelConfig.from_name("paper-x4"))
    uni = macs_per_lr_pixel(ModelConfig.from_name("paper-x4-unidirectional"))
    assert uni["convlstm"] * 2 == full["convlstm"] and uni["refine"] < full["refine"]


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("kind", ["bicubic", "edsr-baseline", "frvsr-light"])
def test_baselines_upscale_every_frame(kind: str, scale: int) -> None:
    model = zoo.build_model(zoo.config_for(f"{kind}-x{scale}")).eval()
    lr, phase = make_inputs(2, 3, 10, 7)
    with torch.no_grad():
        out = model(lr, phase)
    assert out.shape == (2, 3, 1, 10 * scale, 7 * scale) and torch.isfinite(out).all()


def test_edsr_baseline_is_sixteen_blocks_of_sixty_four_features() -> None:
    model = zoo.build_model(zoo.config_for("edsr-baseline-x4"))
    convs = [m for m in model.body.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 2 * 16 + 1 and all(c.out_channels == 64 for c in convs)
    assert [type(m).__name__ for m in model.tail[0]] == ["Conv2d", "PixelShuffle"] * 2


def test_bicubic_baseline_matches_the_projects_bicubic_interpolation() -> None:
    rng = np.random.default_rng(0)
    lr = rng.uniform(0, 255, (2, 12, 9)).astype(np.float32)
    model = zoo.build_model(zoo.config_for("bicubic-x3"))
    ours = model(torch.from_numpy(lr)[None, :, None], torch.zeros(1, 2))[0, :, 0].numpy()
    assert np.abs(ours - bicubic_upscale(lr, 3)).max() < 1e-3


def test_warp_follows_the_flow() -> None:
    image = torch.arange(30.0).reshape(1, 1, 5, 6)
    assert torch.allclose(warp(image, torch.zeros(1, 2, 5, 6)), image)
    flow = torch.zeros(1, 2, 5, 6)
    flow[:, 0] = 1.0  # sample one pixel to the right
    assert torch.allclose(warp(image, flow)[..., :-1], image[..., 1:])
    assert FlowNet()(torch.randn(2, 1, 9, 13), torch.randn(2, 1, 9, 13)).shape == (2, 2, 9, 13)


def test_frvsr_feeds_its_previous_estimate_forward() -> None:
    model = zoo.build_model(zoo.config_for("frvsr-light-x2")).eval()
    lr, phase = make_inputs(1, 3, 8, 8)
    changed = lr.clone()
    changed[:, 0] += 1.0
    with torch.no_grad():
        a, b = model(lr, phase), model(changed, phase)
    assert not torch.allclose(a[:, 2], b[:, 2]), "frame 2 depends on frame 0 through the recurrence"
    model.train()
    outputs = model(lr, phase)
    assert len(outputs) == 3 and outputs[1].shape == (1, 2, 1, 8, 8)
    model.loss(outputs, torch.randn(1, 3, 1, 16, 16)).backward()
    assert model.flow.body[0].weight.grad.abs().sum() > 0, "the flow network learns from the warping loss"


def test_baseline_checkpoints_round_trip_and_are_refused_as_cmrvsr(tmp_path: Path) -> None:
    config = zoo.config_for("edsr-baseline-x2")
    model = zoo.build_model(config)
    save_checkpoint(model, tmp_path / "b.safetensors", ModelCard(config=config))
    card = read_card(tmp_path / "b.safetensors")
    assert card.config == config
    again = zoo.build_model(card.config)
    load_weights(again, tmp_path / "b.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True))
    with pytest.raises(ValueError, match="edsr-baseline baseline of the benchmark zoo"):
        load_checkpoint(tmp_path / "b.safetensors")
    with pytest.raises(ValueError, match="kind must be one of"):
        BaselineConfig(kind="srcnn")


def test_old_cards_without_the_ablation_fields_still_load() -> None:
    # The config of a card written before the ablation switches existed.
    config = {
        "features": 16,
        "lstm_layers": 2,
        "phase_code": "public",
        "scale": 4,
        "stages": 2,
        "warmup": 3,
        "window": 5,
    }
    assert zoo.config_from_dict(config) == ModelConfig.from_name("lite-x4")


TRAIN = ["--data", "phantom:2", "--size", "48", "--crop", "8"]


@pytest.mark.parametrize("preset", ["edsr-baseline-x4", "frvsr-light-x4", "lite-x4-unidirectional"])
def test_zoo_members_train_with_a_step_budget(tmp_path: Path, preset: str) -> None:
    out = tmp_path / preset
    assert (
        main(["train", "--preset", preset, *TRAIN, "--budget", "2x2", "--validate-every", "2", "--out", str(out)]) == 0
    )
    card = read_card(out / "last.safetensors")
    assert card.training["iterations"] == 2 and card.training["budget"]["steps"] == 2
    assert card.training["budget"]["batch"] == 2 and card.training["recipe"]["batch"] == 2
    assert card.config == zoo.config_for(preset)


def test_train_refuses_what_cannot_be_trained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--preset", "bicubic-x4", *TRAIN, "--out", str(tmp_path / "b")]) == 2
    assert "nothing to train" in capsys.readouterr().err
    assert main(["train", "--preset", "lite-x4", *TRAIN, "--budget", "3y", "--out", str(tmp_path / "c")]) == 2
    assert "STEPSxBATCH" in capsys.readouterr().err
    assert (
        main(["train", "--preset", "lite-x4", *TRAIN, "--budget", "3", "--minutes", "1", "--out", str(tmp_path)]) == 2
    )
    assert not any((tmp_path / name).exists() for name in "bcd")
