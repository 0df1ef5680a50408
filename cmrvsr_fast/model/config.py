"""Model configuration: one validated dataclass and the named presets (docs/model.md)."""

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

    The paper's Table 2 ablations switch parts off (all True in the paper's model):
    hidden_feedback: the ConvLSTM gates see the previous hidden state; False feeds the input in its place (the
        public implementation's `memory=False`: same parameters, no hidden-state recurrence; c is still carried).
    bidirectional: a backward ConvLSTM beside the forward one.
    phase_fusion: the RefineBlock fuses a window of frames with their phase codes; False fuses only the frame's
        own hidden states (requires window = 1).
    The warm-up update off is warmup = 0; residual of residual off is stages = 1.
    """

    scale: int = 4
    features: int = 64
    lstm_layers: int = 3
    window: int = 5
    warmup: int = 6
    stages: int = 3
    phase_code: str = "public"
    hidden_feedback: bool = True
    bidirectional: bool = True
    phase_fusion: bool = True

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
        for name in ("hidden_feedback", "bidirectional", "phase_fusion"):
            require(isinstance(getattr(self, name), bool), f"{name} must be a bool, got {getattr(self, name)!r}")
        require(self.phase_fusion or self.window == 1, f"without phase fusion the window must be 1, got {self.window}")
        require(
            self.phase_code in PHASE_CODE_VARIANTS,
            f"phase_code must be one of {PHASE_CODE_VARIANTS}, got {self.phase_code!r}",
        )

    @property
    def half_window(self) -> int:
        """N, the number of neighbours on each side in the phase-fusion window."""
        return self.window // 2

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def frame_channels(self) -> int:
        """Channels of one frame's fusion feature: forward h, backward h and the phase code (2F + 1); without the
        backward direction F + 1, without phase fusion no phase code."""
        return self.directions * self.features + int(self.phase_fusion)

    @property
    def ablations(self) -> tuple[str, ...]:
        """The Table 2 parts this configuration switches off (empty for the paper's model)."""
        switched_off = {
            "no-memory": not self.hidden_feedback,
            "no-warmup": self.warmup == 0,
            "unidirectional": not self.bidirectional,
            "no-phase-fusion": not self.phase_fusion,
            "no-ror": self.stages == 1,
        }
        return tuple(name for name, off in switched_off.items() if off)

    @classmethod
    def from_name(cls, name: str) -> ModelConfig:
        """A named preset: paper-x2, paper-x3, paper-x4, lite-x4, or one of their Table 2 ablations
        (`paper-x4-no-memory`, … see ABLATIONS)."""
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
    "lite-x2": dict(scale=2, features=16, lstm_layers=2, window=5, warmup=3, stages=2),
    "lite-x3": dict(scale=3, features=16, lstm_layers=2, window=5, warmup=3, stages=2),
    "lite-x4": dict(scale=4, features=16, lstm_layers=2, window=5, warmup=3, stages=2),
}

# Table 2 of the paper, one part switched off at a time (the paper adds them cumulatively; see the README).
ABLATIONS: dict[str, dict[str, Any]] = {
    "no-memory": dict(hidden_feedback=False),
    "no-warmup": dict(warmup=0),
    "unidirectional": dict(bidirectional=False),
    "no-phase-fusion": dict(phase_fusion=False, window=1),
    "no-ror": dict(stages=1),
}
ABLATED_BASES = ("paper-x4", "lite-x4")
PRESETS.update(
    {f"{base}-{name}": dict(PRESETS[base], **change) for base in ABLATED_BASES for name, change in ABLATIONS.items()}
)
