"""Checkpoints: bit-exact round trip, refusal of tampered or mismatching files, import of public checkpoints."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import make_inputs, make_model

from cmrvsr_fast import ModelCard, ModelConfig, import_official_checkpoint, load_checkpoint, save_checkpoint
from cmrvsr_fast.model.checkpoint import card_path


def test_round_trip_is_bit_exact(tmp_path: Path, tiny_config: ModelConfig) -> None:
    model = make_model(tiny_config)
    card = ModelCard(
        config=tiny_config,
        normalisation=(51.193, 52.671),
        training={"data": "phantom", "iterations": 12, "hardware": "test"},
        metrics={"cardiac_psnr": 30.5},
    )
    written = save_checkpoint(model, tmp_path / "w.safetensors", card)
    loaded, loaded_card = load_checkpoint(tmp_path / "w.safetensors")
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert loaded_card == written and loaded_card.weights_sha256 and not loaded.training
    lr, phase = make_inputs(1, 3, 4, 4)
    with torch.no_grad():
        assert torch.equal(model.eval()(lr, phase), loaded(lr, phase))
    body = json.loads(card_path(tmp_path / "w.safetensors").read_text())
    assert body["scale"] == 4 and body["phase_code"] == "public" and body["normalisation"]["std"] == 52.671
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.json", "w.safetensors"]  # no temporary files left


def test_tampered_weights_are_refused(tmp_path: Path, tiny_config: ModelConfig) -> None:
    path = tmp_path / "w.safetensors"
    save_checkpoint(make_model(tiny_config), path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        load_checkpoint(path)


def test_missing_or_corrupt_card_is_refused(tmp_path: Path, tiny_config: ModelConfig) -> None:
    path = tmp_path / "w.safetensors"
    save_checkpoint(make_model(tiny_config), path)
    card_path(path).write_text("{not json")
    with pytest.raises(ValueError, match="not a valid model card"):
        load_checkpoint(path)
    card_path(path).unlink()
    with pytest.raises(FileNotFoundError, match="card"):
        load_checkpoint(path)


def test_card_with_another_configuration_is_refused_by_key(tmp_path: Path, tiny_config: ModelConfig) -> None:
    path = tmp_path / "w.safetensors"
    save_checkpoint(make_model(tiny_config), path)
    body = json.loads(card_path(path).read_text())
    body["config"]["features"] = 7
    card_path(path).write_text(json.dumps(body))
    with pytest.raises(ValueError, match=r"in_block\.conv\.weight.*shape"):
        load_checkpoint(path)


def test_only_safetensors_are_written(tmp_path: Path, tiny_config: ModelConfig) -> None:
    with pytest.raises(ValueError, match="safetensors"):
        save_checkpoint(make_model(tiny_config), tmp_path / "w.pt")


# ---- checkpoints of the authors' public implementation (key names from docs/model.md, written out by hand) ----


def public_state_dict(config: ModelConfig) -> dict[str, torch.Tensor]:
    f, win, r = config.features, config.window, config.scale
    shapes = {
        "in_block.conv.weight": (f, 1, 3, 3),
        "in_block.conv.bias": (f,),
        "in_block.prelu.weight": (1,),
        "refine_block.body.conv1.weight": (2 * f + 1, win * (2 * f + 1), 3, 3),
        "refine_block.body.conv1.bias": (2 * f + 1,),
        "refine_block.body.conv2.weight": (f, 2 * f + 1, 3, 3),
        "refine_block.body.conv2.bias": (f,),
        "refine_block.prelu.weight": (1,),
    }
    for direction in ("forward", "backward"):
        for layer in range(config.lstm_layers):
            shapes[f"{direction}_lstm_block.cell_list.{layer}.conv.weight"] = (4 * f, 2 * f, 3, 3)
            shapes[f"{direction}_lstm_block.cell_list.{layer}.conv.bias"] = (4 * f,)
    if r == 4:
        shapes |= {"out_block.conv1.weight": (4 * f, f, 3, 3), "out_block.conv2.weight": (4 * f, f, 3, 3)}
        shapes |= {"out_block.conv1.bias": (4 * f,), "out_block.conv2.bias": (4 * f,)}
        shapes |= {"out_block.conv3.weight": (1, f, 3, 3), "out_block.conv3.bias": (1,)}
    else:
        shapes |= {"out_block.conv1.weight": (r * r * f, f, 3, 3), "out_block.conv1.bias": (r * r * f,)}
        shapes |= {"out_block.conv2.weight": (1, f, 3, 3), "out_block.conv2.bias": (1,)}
    return {key: torch.randn(shape) for key, shape in shapes.items()}


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_import_public_checkpoint(tmp_path: Path, scale: int) -> None:
    config = ModelConfig.from_name(f"paper-x{scale}")
    state = public_state_dict(config)
    torch.save({"net": state, "optimizer": {"state": {}}, "epoch": 17}, tmp_path / "model_best.pth")
    model = import_official_checkpoint(tmp_path / "model_best.pth", config)
    expected = {
        model.in_block.conv.weight: "in_block.conv.weight",
        model.in_block.act.weight: "in_block.prelu.weight",
        model.lstm_forward.cells[2].conv.weight: "forward_lstm_block.cell_list.2.conv.weight",
        model.lstm_backward.cells[0].conv.bias: "backward_lstm_block.cell_list.0.conv.bias",
        model.refine.fuse.weight: "refine_block.body.conv1.weight",
        model.refine.project.bias: "refine_block.body.conv2.bias",
        model.refine.unused_prelu.weight: "refine_block.prelu.weight",
        model.out_block.up[0].weight: "out_block.conv1.weight",
        model.out_block.final.weight: f"out_block.conv{3 if scale == 4 else 2}.weight",
    }
    for parameter, key in expected.items():
        assert torch.equal(parameter, state[key]), key
    # Every tensor of the file landed somewhere, once.
    assert sorted(p.sum().item() for p in model.state_dict().values()) == sorted(t.sum().item() for t in state.values())


def test_import_accepts_bare_and_dataparallel_state_dicts(tmp_path: Path) -> None:
    config = ModelConfig.from_name("paper-x4")
    state = public_state_dict(config)
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "dp.pth")
    model = import_official_checkpoint(tmp_path / "dp.pth", config)
    assert torch.equal(model.in_block.conv.bias, state["in_block.conv.bias"])


def test_import_refuses_wrong_scale_naming_the_key(tmp_path: Path) -> None:
    torch.save({"net": public_state_dict(ModelConfig.from_name("paper-x4"))}, tmp_path / "x4.pth")
    with pytest.raises(ValueError, match=r"unexpected keys \['out_block\.conv3\.bias', 'out_block\.conv3\.weight'\]"):
        import_official_checkpoint(tmp_path / "x4.pth", ModelConfig.from_name("paper-x2"))


def test_import_refuses_wrong_shape_naming_the_key(tmp_path: Path) -> None:
    config = ModelConfig.from_name("paper-x4")
    state = public_state_dict(config)
    state["refine_block.body.conv1.weight"] = torch.randn(129, 640, 3, 3)  # a checkpoint without the phase code
    torch.save({"net": state}, tmp_path / "nophase.pth")
    with pytest.raises(ValueError, match=r"'refine_block\.body\.conv1\.weight' has shape \(129, 640, 3, 3\)"):
        import_official_checkpoint(tmp_path / "nophase.pth", config)


def test_import_refuses_missing_key(tmp_path: Path) -> None:
    config = ModelConfig.from_name("paper-x4")
    state = public_state_dict(config)
    del state["backward_lstm_block.cell_list.1.conv.bias"]
    torch.save({"net": state}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"missing keys \['backward_lstm_block\.cell_list\.1\.conv\.bias'\]"):
        import_official_checkpoint(tmp_path / "partial.pth", config)


class _NotATensor:
    pass


def test_import_refuses_pickled_objects(tmp_path: Path) -> None:
    torch.save({"net": _NotATensor()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="weights-only"):
        import_official_checkpoint(tmp_path / "evil.pth", ModelConfig.from_name("paper-x4"))


def test_written_files_get_ordinary_permissions(tmp_path: Path, tiny_config: ModelConfig) -> None:
    save_checkpoint(make_model(tiny_config), tmp_path / "w.safetensors")
    mask = os.umask(0)
    os.umask(mask)
    for name in ("w.safetensors", "w.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask
