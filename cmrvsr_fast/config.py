"""Model configuration: one validated dataclass and the named presets (SPEC §1–2)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

SUPPORTED_SCALES = (2, 3, 4)
PHASE_CODE_VARIANTS = ("public", "paper")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one member of the CMRVSR family.

    scale: upscaling factor r (2, 3 or 4).
    features: F, the width of every feature map (InBlock, ConvLSTM hidden state, RefineBlock output).
    lstm_layers: stacked ConvLSTM cells per direction.
    window: 2N+1 frames fused by the RefineBlock (odd).
    warmup: n cyclic warm-up frames taken on each side of the cine.
    stages: S refinement stages (residual of residual); the paper's Ω = S − 1.
    phase_code: which phase-code formula the weights were trained with ("public" or "paper", see phase.py).
    """

    scale: int = 4
    features: int = 64
    lstm_layers: int = 3
    window: int = 5
    warmup: int = 6
    stages: int = 3
    phase_code: str = "public"

    def __post_init__(self) -> None:
        def require(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(f"ModelConfig: {message}")

        for name in ("scale", "features", "lstm_layers", "window", "warmup", "stages"):
            value = getattr(self, name)
            require(isinstance(value, int) and not isinstance(value, bool), f"{name} must be an int, got {value!r}")
        require(self.scale in SUPPORTED_SCALES, f"scale must be one of {SUPPORTED_SCALES}, got {self.scale}")
        require(self.features >= 1, f"features must be >= 1, got {self.features}")
        require(self.lstm_layers >= 1, f"lstm_layers must be >= 1, got {self.lstm_layers}")
        require(self.window >= 1 and self.window % 2 == 1, f"window must be odd and >= 1, got {self.window}")
        require(self.warmup >= 0, f"warmup must be >= 0, got {self.warmup}")
        require(self.stages >= 1, f"stages must be >= 1, got {self.stages}")
        require(
            self.phase_code in PHASE_CODE_VARIANTS,
            f"phase_code must be one of {PHASE_CODE_VARIANTS}, got {self.phase_code!r}",
        )

    @property
    def half_window(self) -> int:
        """N, the number of neighbours on each side in the phase-fusion window."""
        return self.window // 2

    @property
    def frame_channels(self) -> int:
        """Channels of one frame's fusion feature: forward h, backward h and the phase code (2F + 1)."""
        return 2 * self.features + 1

    @classmethod
    def from_name(cls, name: str) -> ModelConfig:
        """A named preset: paper-x2, paper-x3, paper-x4 or lite-x4."""
        try:
            return cls(**PRESETS[name])
        except KeyError:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"ModelConfig: unknown fields {unknown}")
        return cls(**values)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)


_PAPER = dict(features=64, lstm_layers=3, window=5, warmup=6, stages=3)

PRESETS: dict[str, dict[str, Any]] = {
    "paper-x2": dict(_PAPER, scale=2),
    "paper-x3": dict(_PAPER, scale=3),
    "paper-x4": dict(_PAPER, scale=4),
    # Same family, sized for CPU training: see the README's "Presets" table for the measured cost.
    "lite-x4": dict(scale=4, features=16, lstm_layers=2, window=5, warmup=3, stages=2),
}
