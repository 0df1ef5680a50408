"""The reference model: parameter counts, shapes, gradients, and the schedule against an explicit construction."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import make_inputs, make_model

from cmrvsr_fast import CMRVSR, ModelConfig, deep_supervision_loss
from cmrvsr_fast.model.network import cyclic_indices


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("preset", "expected"), [("paper-x4", 2_890_993), ("paper-x3", 2_927_921), ("paper-x2", 2_743_281)]
)
def test_paper_parameter_counts(preset: str, expected: int) -> None:
    assert count(CMRVSR(ModelConfig.from_name(preset))) == expected


def test_paper_x4_block_parameter_counts() -> None:
    model = CMRVSR(ModelConfig.from_name("paper-x4"))
    assert count(model.in_block) == 641
    assert count(model.lstm_forward) == count(model.lstm_backward) == 885_504
    assert count(model.refine) == 823_342 + 1  # the public implementation's unused PReLU slope
    assert count(model.out_block) == 296_001


def test_lite_preset_is_smaller_member_of_the_family() -> None:
    lite, paper = ModelConfig.from_name("lite-x4"), ModelConfig.from_name("paper-x4")
    assert lite.scale == paper.scale == 4
    assert count(CMRVSR(lite)) < count(CMRVSR(paper)) / 4


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("frames", [1, 2, 7])
def test_eval_output_shape_paper_presets(scale: int, frames: int) -> None:
    model = CMRVSR(ModelConfig.from_name(f"paper-x{scale}")).eval()
    lr, phase = make_inputs(2, frames, 5, 7)
    with torch.no_grad():
        out = model(lr, phase)
    assert out.shape == (2, frames, 1, 5 * scale, 7 * scale)
    assert torch.isfinite(out).all()


def test_eval_output_shape_thirty_frames() -> None:
    model = CMRVSR(ModelConfig.from_name("paper-x4")).eval()
    lr, phase = make_inputs(1, 30, 3, 5)
    with torch.no_grad():
        assert model(lr, phase).shape == (1, 30, 1, 12, 20)


@pytest.mark.parametrize(("frames", "warmup", "stages"), [(1, 0, 1), (2, 5, 2), (7, 3, 3), (4, 0, 3)])
def test_training_mode_returns_three_outputs_per_stage(frames: int, warmup: int, stages: int) -> None:
    config = ModelConfig(scale=3, features=4, lstm_layers=1, warmup=warmup, stages=stages)
    model = make_model(config).train()
    lr, phase = make_inputs(2, frames, 4, 3)
    outputs = model(lr, phase)
    assert len(outputs) == 3 * stages
    assert all(o.shape == (2, frames, 1, 12, 9) for o in outputs)
    with torch.no_grad():
        assert torch.equal(model.eval()(lr, phase), outputs[-1].detach())


def test_gradients_reach_every_parameter_but_the_unused_slope() -> None:
    model = make_model(ModelConfig.from_name("paper-x4")).train()
    lr, phase = make_inputs(1, 3, 4, 4)
    target = torch.randn(1, 3, 1, 16, 16)
    deep_supervision_loss(model(lr, phase), target).backward()
    for name, parameter in model.named_parameters():
        if name == "refine.unused_prelu.weight":
            assert parameter.grad is None
        else:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_stages_is_a_run_time_choice(tiny_config: ModelConfig) -> None:
    model = make_model(tiny_config).eval()
    lr, phase = make_inputs(1, 5, 4, 4)
    with torch.no_grad():
        one, three = model(lr, phase, stages=1), model(lr, phase)
    assert one.shape == three.shape and not torch.allclose(one, three)
    with pytest.raises(ValueError, match="stages"):
        model(lr, phase, stages=0)


@pytest.mark.parametrize(
    ("lr_shape", "phase_shape", "error"),
    [((1, 3, 2, 4, 4), (1, 3), "lr must be"), ((1, 3, 1, 4), (1, 3), "lr must be"), ((1, 3, 1, 4, 4), (1, 4), "phase")],
)
def test_bad_inputs_are_refused(tiny_config: ModelConfig, lr_shape, phase_shape, error: str) -> None:
    model = CMRVSR(tiny_config).eval()
    with pytest.raises(ValueError, match=error):
        model(torch.randn(lr_shape), torch.zeros(phase_shape))


def test_cyclic_indices_wrap_repeatedly() -> None:
    assert cyclic_indices(4, 2) == [2, 3, 0, 1, 2, 3, 0, 1]
    assert cyclic_indices(2, 5) == [1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0]
    assert cyclic_indices(3, 0) == [0, 1, 2]


# ---- an explicit, step-by-step construction of the network (docs/model.md), written independently of the model's code


def explicit_forward(
    model: CMRVSR, lr: torch.Tensor, phase: torch.Tensor, warmup_included: bool = False
) -> list[torch.Tensor]:
    """All 3·S outputs, built the long way: the cyclic extension by tiling, the ConvLSTM with F.conv2d on the
    model's weights, fusion windows over a zero-padded list, and the public code's list arithmetic for updates."""
    cfg = model.config
    n, N = cfg.warmup, cfg.half_window
    if warmup_included:
        ext_lr, ext_phase = lr, phase
    else:
        T = lr.shape[1]
        copies = n // T + 1
        tiled_lr = torch.cat([lr] * (2 * copies + 1), dim=1)
        tiled_phase = torch.cat([phase] * (2 * copies + 1), dim=1)
        start = copies * T - n
        ext_lr, ext_phase = tiled_lr[:, start : start + T + 2 * n], tiled_phase[:, start : start + T + 2 * n]
    length = ext_lr.shape[1]
    T = length - 2 * n

    def run_lstm(cells, sequence):
        h = [torch.zeros_like(sequence[0]) for _ in cells]
        c = [torch.zeros_like(sequence[0]) for _ in cells]
        result = []
        for x in sequence:
            for layer, cell in enumerate(cells):
                gates = F.conv2d(torch.cat([x, h[layer]], 1), cell.conv.weight, cell.conv.bias, padding=1)
                gi, gf, go, gg = gates.chunk(4, dim=1)
                c[layer] = torch.sigmoid(gf) * c[layer] + torch.sigmoid(gi) * torch.tanh(gg)
                h[layer] = torch.sigmoid(go) * torch.tanh(c[layer])
                x = h[layer]
            result.append(x)
        return result

    def upsample(x):
        for conv, shuffle in zip(model.out_block.up, model.out_block.shuffles, strict=True):
            x = shuffle(F.conv2d(x, conv.weight, conv.bias, padding=1))
        return F.conv2d(x, model.out_block.final.weight, model.out_block.final.bias, padding=1)

    feats = [model.in_block(ext_lr[:, j]) for j in range(length)]
    outputs = []
    for _ in range(cfg.stages):
        hf = run_lstm(model.lstm_forward.cells, feats)
        hb = list(reversed(run_lstm(model.lstm_backward.cells, list(reversed(feats)))))
        height, width = feats[0].shape[-2:]
        per_frame = [
            torch.cat([hf[j], hb[j], ext_phase[:, j].view(-1, 1, 1, 1).expand(-1, 1, height, width)], 1)
            for j in range(length)
        ]
        padded = [torch.zeros_like(per_frame[0])] * N + per_frame + [torch.zeros_like(per_frame[0])] * N
        refine_maps = [
            F.conv2d(
                F.conv2d(
                    torch.cat(padded[j : j + 2 * N + 1], 1), model.refine.fuse.weight, model.refine.fuse.bias, padding=1
                ),
                model.refine.project.weight,
                model.refine.project.bias,
                padding=1,
            )
            for j in range(length)
        ]
        for paths in (hf, hb, refine_maps):
            outputs.append(torch.stack([upsample(feats[n + t] + paths[n + t]) for t in range(T)], dim=1))
        feats = list(feats)
        for i in range(n):
            feats[i] = feats[i] + (hf[i] if i < N else refine_maps[i])
            feats[-i - 1] = feats[-i - 1] + (hb[-i - 1] if i < N else refine_maps[-i - 1])
        for t in range(T):
            feats[n + t] = feats[n + t] + refine_maps[n + t]
    return outputs


@pytest.mark.parametrize(
    ("frames", "warmup", "scale"),
    [(7, 3, 4), (2, 5, 3), (1, 0, 2), (4, 1, 4), (5, 6, 2), (30, 6, 4)],
    ids=["n<T", "n>T-wraps", "T=1,n=0", "n<N-zero-pad", "n>T-paper-n", "T=30"],
)
def test_schedule_matches_explicit_construction(frames: int, warmup: int, scale: int) -> None:
    config = ModelConfig(scale=scale, features=5, lstm_layers=2, window=5, warmup=warmup, stages=3)
    model = make_model(config, torch.float64).train()
    lr, phase = make_inputs(2, frames, 3, 4, torch.float64)
    with torch.no_grad():
        ours = model(lr, phase)
        theirs = explicit_forward(model, lr, phase)
    assert len(ours) == len(theirs) == 9
    for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=f"output {index}")


def test_paper_preset_matches_explicit_construction() -> None:
    model = make_model(ModelConfig.from_name("paper-x4"), torch.float64).eval()
    lr, phase = make_inputs(1, 3, 4, 3, torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(lr, phase), explicit_forward(model, lr, phase)[-1], rtol=1e-12, atol=1e-12)


def test_clips_with_their_true_neighbours_as_warm_up(tiny_config: ModelConfig) -> None:
    """Training clips carry real neighbouring frames as warm-up (warmup_included=True)."""
    model = make_model(tiny_config.replace(warmup=3), torch.float64).train()
    cine, cine_phase = make_inputs(2, 20, 4, 3, torch.float64)
    clip, clip_phase = cine[:, 2:15], cine_phase[:, 2:15]  # 7 centre frames (5 … 11) + 3 neighbours each side
    with torch.no_grad():
        ours = model(clip, clip_phase, warmup_included=True)
        theirs = explicit_forward(model, clip, clip_phase, warmup_included=True)
    assert ours[0].shape == (2, 7, 1, 16, 12)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_warmup_included_equals_the_cyclic_extension(tiny_config: ModelConfig) -> None:
    model = make_model(tiny_config, torch.float64).eval()
    lr, phase = make_inputs(1, 4, 3, 3, torch.float64)
    index = cyclic_indices(4, tiny_config.warmup)
    with torch.no_grad():
        torch.testing.assert_close(model(lr[:, index], phase[:, index], warmup_included=True), model(lr, phase))
        with pytest.raises(ValueError, match="no centre frame"):
            model(lr, phase, warmup_included=True)  # 4 frames cannot hold 2 × 3 warm-up frames and a centre


def test_warm_up_update_changes_the_result(tiny_config: ModelConfig) -> None:
    """The warm-up features carry the residual update: with it removed, the last stage changes."""
    model = make_model(tiny_config).eval()
    lr, phase = make_inputs(1, 4, 4, 4)
    with torch.no_grad():
        full = model(lr, phase)
        model._residual_update = lambda features, *_: features  # type: ignore[method-assign]
        frozen = model(lr, phase)
    assert not torch.allclose(full, frozen)


def test_loss_weights_stages_by_half_powers() -> None:
    target = torch.zeros(1, 2, 1, 4, 4)
    # Stage s, path p gets a constant error of (1 + p): every path's L1 is known exactly.
    outputs = tuple(torch.full_like(target, 1.0 + p) for _ in range(3) for p in range(3))
    expected = sum(0.5 ** (2 - s) * (1 + 2 + 3) for s in range(3))
    assert deep_supervision_loss(outputs, target).item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="3·S"):
        deep_supervision_loss(outputs[:4], target)
