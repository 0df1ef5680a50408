"""The comparison zoo of the paper's Fig. 4a and Table 2: every model a benchmark can build by name.

- the CMRVSR presets (paper-x2/x3/x4, lite-x4) and their Table 2 ablations (`paper-x4-no-memory`, …), all
  `ModelConfig`s of one family (config.PRESETS);
- the baselines bicubic, EDSR-baseline and a light FRVSR-style network at ×2/×3/×4 (`edsr-baseline-x4`, …).

`build_model(config_for(name))` gives an nn.Module with CMRVSR's call signature; `FIG4A` is the default sweep.
"""

from __future__ import annotations

from torch import nn

from cmrvsr_fast.model.baselines import BASELINE_KINDS, BaselineConfig, build_baseline
from cmrvsr_fast.model.config import ABLATED_BASES, ABLATIONS, PRESETS, SUPPORTED_SCALES, ModelConfig
from cmrvsr_fast.model.network import CMRVSR

AnyConfig = ModelConfig | BaselineConfig

_BASELINE_SIZES = {"bicubic": dict(), "edsr-baseline": dict(features=64, blocks=16), "frvsr-light": dict(blocks=10)}
BASELINES: dict[str, BaselineConfig] = {
    f"{kind}-x{scale}": BaselineConfig(kind=kind, scale=scale, **_BASELINE_SIZES[kind])
    for kind in BASELINE_KINDS
    for scale in SUPPORTED_SCALES
}

# The default sweep: every ×4 member (baselines, the paper model, the CPU-sized preset, both ablation sets) and
# the paper model at ×2 and ×3.
FIG4A: tuple[str, ...] = (
    *(f"{kind}-x4" for kind in BASELINE_KINDS),
    *(name for base in ABLATED_BASES for name in (base, *(f"{base}-{a}" for a in ABLATIONS))),
    "paper-x2",
    "paper-x3",
)


def names() -> list[str]:
    return sorted(PRESETS) + sorted(BASELINES)


def config_for(name: str) -> AnyConfig:
    if name in BASELINES:
        return BASELINES[name]
    if name in PRESETS:
        return ModelConfig.from_name(name)
    raise ValueError(f"unknown zoo model {name!r}; choose one of {names()}")


def config_from_dict(values: dict) -> AnyConfig:
    """A card's configuration: a baseline's carries the key `baseline`."""
    return BaselineConfig.from_dict(values) if "baseline" in values else ModelConfig.from_dict(values)


def build_model(config: AnyConfig) -> nn.Module:
    return build_baseline(config) if isinstance(config, BaselineConfig) else CMRVSR(config)


def family(config: AnyConfig) -> str:
    """cmrvsr, ablation or baseline: the groups of the Fig. 4a plot."""
    if isinstance(config, BaselineConfig):
        return "baseline"
    return "ablation" if config.ablations else "cmrvsr"


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
