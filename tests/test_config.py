"""ModelConfig: presets, validation, serialisation."""

from __future__ import annotations

import pytest

from cmrvsr_fast import PRESETS, ModelConfig


def test_paper_presets_follow_the_spec() -> None:
    for scale in (2, 3, 4):
        config = ModelConfig.from_name(f"paper-x{scale}")
        assert (config.scale, config.features, config.lstm_layers, config.window, config.warmup, config.stages) == (
            scale,
            64,
            3,
            5,
            6,
            3,
        )
        assert config.half_window == 2 and config.frame_channels == 129 and config.phase_code == "public"


def test_every_preset_round_trips_through_a_dict() -> None:
    for name in PRESETS:
        config = ModelConfig.from_name(name)
        assert ModelConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scale": 8}, "scale"),
        ({"window": 4}, "window"),
        ({"window": 0}, "window"),
        ({"warmup": -1}, "warmup"),
        ({"stages": 0}, "stages"),
        ({"features": 0}, "features"),
        ({"lstm_layers": 0}, "lstm_layers"),
        ({"features": 64.0}, "features must be an int"),
        ({"stages": True}, "stages must be an int"),
        ({"phase_code": "sine"}, "phase_code"),
    ],
)
def test_invalid_values_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelConfig(**changes)


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown preset 'paper-x8'"):
        ModelConfig.from_name("paper-x8")
    with pytest.raises(ValueError, match="unknown fields"):
        ModelConfig.from_dict({"scale": 4, "dropout": 0.1})


def test_warmup_zero_is_allowed() -> None:
    assert ModelConfig(warmup=0).warmup == 0
