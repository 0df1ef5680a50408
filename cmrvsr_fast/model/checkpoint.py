"""Checkpoints: safetensors weights + a JSON card, and import of the authors' public checkpoints.

A checkpoint is two files side by side: `NAME.safetensors` (the weights, nothing executable) and `NAME.json`
(the card: configuration, normalisation, phase-code variant, training data and recipe, metrics and the sha256
of the weights file). Loading checks the hash before it trusts the card.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from cmrvsr_fast.atomic import atomic_write, atomic_write_text
from cmrvsr_fast.model.baselines import BaselineConfig
from cmrvsr_fast.model.config import PRESETS, ModelConfig
from cmrvsr_fast.model.network import CMRVSR
from cmrvsr_fast.model.zoo import config_from_dict

CARD_FORMAT = "cmrvsr_fast.card/1"

# Mean and standard deviation of the training intensities on the 0–255 scale (docs/model.md).
NORMALISATION = {"acdc": (54.089, 48.084), "dsb15": (51.193, 52.671)}


@dataclass
class ModelCard:
    """What a set of weights is and how it was made. `normalisation` is (mean, std) on the 0–255 scale."""

    config: ModelConfig | BaselineConfig  # a baseline's only in the benchmark zoo's training runs
    normalisation: tuple[float, float] = NORMALISATION["acdc"]
    training: dict[str, Any] = field(default_factory=dict)  # data, recipe, iterations, wall time, hardware
    metrics: dict[str, Any] = field(default_factory=dict)
    weights_sha256: str = ""
    notes: str = ""

    def to_json(self) -> str:
        body = dataclasses.asdict(self)
        body["config"] = self.config.to_dict()
        body["normalisation"] = {"mean": self.normalisation[0], "std": self.normalisation[1], "scale": "0-255"}
        body["scale"] = self.config.scale
        body["phase_code"] = self.config.phase_code
        return json.dumps({"format": CARD_FORMAT, **body}, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "card") -> ModelCard:
        try:
            body = json.loads(text)
            if body.get("format") != CARD_FORMAT:
                raise ValueError(f"format is {body.get('format')!r}, expected {CARD_FORMAT!r}")
            norm = body["normalisation"]
            return cls(
                config=config_from_dict(body["config"]),
                normalisation=(float(norm["mean"]), float(norm["std"])),
                training=dict(body.get("training", {})),
                metrics=dict(body.get("metrics", {})),
                weights_sha256=str(body["weights_sha256"]),
                notes=str(body.get("notes", "")),
            )
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as error:
            raise ValueError(f"{source}: not a valid model card ({error})") from None


def card_path(weights_path: str | os.PathLike[str]) -> Path:
    return Path(weights_path).with_suffix(".json")


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(model: torch.nn.Module, path: str | os.PathLike[str], card: ModelCard | None = None) -> ModelCard:
    """Write `path` (.safetensors) and its card beside it; returns the card with the weights' sha256 filled in."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: checkpoints are written as .safetensors")
    card = ModelCard(config=model.config) if card is None else card
    if card.config != model.config:
        raise ValueError("the card's configuration differs from the model's")
    tensors = {name: value.detach().to("cpu").contiguous() for name, value in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": CARD_FORMAT}))
    card = dataclasses.replace(card, weights_sha256=sha256_file(path))
    atomic_write_text(card_path(path), card.to_json())
    return card


def load_checkpoint(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[CMRVSR, ModelCard]:
    """Load a checkpoint written by save_checkpoint -> (model in eval mode, card). Refuses a weights file whose
    sha256 differs from its card's, and weights that do not fit the card's configuration."""
    card = read_card(path)
    if isinstance(card.config, BaselineConfig):
        raise ValueError(f"{path}: a {card.config.kind} baseline of the benchmark zoo, not a CMRVSR model")
    model = CMRVSR(card.config)
    load_weights(model, path)
    return model.to(device).eval(), card


def read_card(path: str | os.PathLike[str]) -> ModelCard:
    """The card beside a weights file, once the file's sha256 matches it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    cpath = card_path(path)
    if not cpath.is_file():
        raise FileNotFoundError(f"{path}: its card {cpath.name} is missing beside it")
    card = ModelCard.from_json(cpath.read_text(), source=str(cpath))
    actual = sha256_file(path)
    if actual != card.weights_sha256:
        raise ValueError(f"{path}: sha256 {actual} does not match its card ({card.weights_sha256})")
    return card


def load_weights(model: torch.nn.Module, path: str | os.PathLike[str]) -> None:
    """Copy a checkpoint's tensors into any zoo model, exactly (see _load_exactly)."""
    _load_exactly(model, load_file(str(path)), source=str(path))


def load_shared_weights(model: torch.nn.Module, path: str | os.PathLike[str]) -> list[str]:
    """Copy the tensors of a checkpoint that match the model by name and shape (e.g. a ×4 model's trunk into a
    ×2 model: every block but the up-sampling) -> the names copied. Nothing matching is an error."""
    source = load_file(str(path))
    own = model.state_dict()
    shared = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    if not shared:
        raise ValueError(f"{path}: no tensor matches the model by name and shape")
    model.load_state_dict(shared, strict=False)
    return sorted(shared)


def official_key_map(config: ModelConfig) -> dict[str, str]:
    """This package's parameter names -> the public implementation's (docs/model.md)."""
    names = {
        "in_block.conv": "in_block.conv",
        "refine.fuse": "refine_block.body.conv1",
        "refine.project": "refine_block.body.conv2",
    }
    for layer in range(config.lstm_layers):
        names[f"lstm_forward.cells.{layer}.conv"] = f"forward_lstm_block.cell_list.{layer}.conv"
        names[f"lstm_backward.cells.{layer}.conv"] = f"backward_lstm_block.cell_list.{layer}.conv"
    upsamplers = {2: 1, 3: 1, 4: 2}[config.scale]
    for index in range(upsamplers):
        names[f"out_block.up.{index}"] = f"out_block.conv{index + 1}"
    names["out_block.final"] = f"out_block.conv{upsamplers + 1}"
    mapping = {f"{ours}.{p}": f"{theirs}.{p}" for ours, theirs in names.items() for p in ("weight", "bias")}
    mapping["in_block.act.weight"] = "in_block.prelu.weight"
    mapping["refine.unused_prelu.weight"] = "refine_block.prelu.weight"
    return mapping


def import_official_checkpoint(path: str | os.PathLike[str], config: ModelConfig) -> CMRVSR:
    """Load a checkpoint written by the authors' public trainer (`{'net': state_dict, ...}` or a bare state
    dict, optionally with DataParallel's `module.` prefix) into CMRVSR(config). Read with
    torch.load(weights_only=True). A missing, unexpected or mis-shaped key is refused by name."""
    path = Path(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot be read as a weights-only torch checkpoint ({error})") from None
    state = blob.get("net", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors (or {{'net': state_dict, ...}})")
    state = {key.removeprefix("module."): value for key, value in state.items()}
    mapping = official_key_map(config)
    theirs_to_ours = {theirs: ours for ours, theirs in mapping.items()}
    missing = sorted(set(mapping.values()) - set(state))
    unexpected = sorted(set(state) - set(mapping.values()))
    if missing or unexpected:
        raise ValueError(
            f"{path}: does not fit {config} — missing keys {missing or 'none'}, unexpected keys {unexpected or 'none'}"
        )
    model = CMRVSR(config)
    _load_exactly(model, {theirs_to_ours[k]: v for k, v in state.items()}, source=str(path), names=mapping)
    return model.eval()


def _load_exactly(
    model: torch.nn.Module, state: dict[str, torch.Tensor], source: str, names: dict[str, str] | None = None
) -> None:
    """Copy `state` into `model`, refusing missing or unexpected keys and shape mismatches by name.
    `names` maps our names to the file's for the messages."""
    names = names or {}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{source}: missing keys {missing or 'none'}, unexpected keys {unexpected or 'none'}")
    for key in expected:  # the model's order, so the first mismatch reported is the earliest layer's
        value = state[key]
        if value.shape != expected[key].shape:
            raise ValueError(
                f"{source}: key {names.get(key, key)!r} has shape {tuple(value.shape)}, "
                f"the model expects {tuple(expected[key].shape)} for {model.config}"
            )
        if not value.is_floating_point():
            raise ValueError(f"{source}: key {names.get(key, key)!r} has dtype {value.dtype}, expected floating point")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def model_chooser(
    weights: str | None = None, preset: str | None = None
) -> Callable[[int], tuple[str, CMRVSR, tuple[float, float]] | None]:
    """For each scale: (label, model, normalisation) from a checkpoint or an untrained preset (seeded, so that
    two evaluations of one preset score the same network), or None without either (bicubic only). A scale the
    weights or preset cannot serve is a ValueError naming both."""
    if weights:
        model, card = load_checkpoint(weights)
        label = Path(weights).stem

        def from_weights(scale: int) -> tuple[str, CMRVSR, tuple[float, float]]:
            if scale != card.config.scale:
                raise ValueError(f"--weights {weights} is a ×{card.config.scale} model; asked for ×{scale}")
            return label, model, card.normalisation

        return from_weights
    if preset:

        def from_preset(scale: int) -> tuple[str, CMRVSR, tuple[float, float]]:
            name = preset if preset in PRESETS else f"{preset}-x{scale}"
            if name not in PRESETS:
                raise ValueError(f"--preset {preset}: no preset {name!r} (choose from {sorted(PRESETS)})")
            config = ModelConfig.from_name(name)
            if config.scale != scale:
                raise ValueError(f"--preset {name} is a ×{config.scale} model; asked for ×{scale}")
            torch.manual_seed(0)
            return f"{name} (untrained)", CMRVSR(config), NORMALISATION["acdc"]

        return from_preset
    return lambda scale: None
