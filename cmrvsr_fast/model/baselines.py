"""Comparison baselines of the paper's Fig. 4a, written for this project: bicubic, an EDSR-baseline single-image
network and a light FRVSR-style recurrent network.

Every baseline takes what CMRVSR takes, `(lr (B, T, 1, H, W) normalised, phase (B, T))`, ignores the phase, and
in eval mode returns (B, T, 1, rH, rW). In training mode it returns the tuple its own `loss` reads, so that one
training loop serves the whole zoo. None uses warm-up frames (`warmup = 0`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmrvsr_fast.model.config import SUPPORTED_SCALES

BASELINE_KINDS = ("bicubic", "edsr-baseline", "frvsr-light")


@dataclass(frozen=True)
class BaselineConfig:
    """kind: one of BASELINE_KINDS; features and blocks: the width and residual blocks of the network
    (EDSR-baseline: 64 × 16, Lim et al. 2017; FRVSR's SRNet: 64 × 10, the authors' baseline config)."""

    kind: str
    scale: int = 4
    features: int = 64
    blocks: int = 16
    warmup: int = 0  # no cyclic warm-up: clips and cines are fed as they are
    phase_code: str = "public"  # unused (no phase input); kept so cards read alike

    def __post_init__(self) -> None:
        if self.kind not in BASELINE_KINDS:
            raise ValueError(f"BaselineConfig: kind must be one of {BASELINE_KINDS}, got {self.kind!r}")
        if self.scale not in SUPPORTED_SCALES:
            raise ValueError(f"BaselineConfig: scale must be one of {SUPPORTED_SCALES}, got {self.scale}")
        if self.features < 1 or self.blocks < 0 or self.warmup != 0:
            raise ValueError(f"BaselineConfig: invalid sizes {self}")

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.kind, **{k: v for k, v in dataclasses.asdict(self).items() if k != "kind"}}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BaselineConfig:
        values = dict(values)
        return cls(kind=values.pop("baseline"), **values)


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class ResBlock(nn.Module):
    """conv–ReLU–conv with an identity skip (no batch norm, as in EDSR)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv3x3(features, features), nn.ReLU(inplace=True), conv3x3(features, features))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class PixelShuffleUpsampler(nn.Sequential):
    """×2/×4: one or two [conv F→4F, PixelShuffle(2)]; ×3: [conv F→9F, PixelShuffle(3)]."""

    def __init__(self, features: int, scale: int) -> None:
        layers: list[nn.Module] = []
        for factor in {2: [2], 3: [3], 4: [2, 2]}[scale]:
            layers += [conv3x3(features, factor * factor * features), nn.PixelShuffle(factor)]
        super().__init__(*layers)


def frames_of(lr: Tensor) -> Tensor:
    if lr.dim() != 5 or lr.shape[2] != 1:
        raise ValueError(f"lr must be (B, T, 1, H, W), got shape {tuple(lr.shape)}")
    return lr.flatten(0, 1)


class Bicubic(nn.Module):
    """Bicubic interpolation (PyTorch's a = −0.75 kernel, the one OpenCV uses); no parameters, nothing to train."""

    def __init__(self, config: BaselineConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, lr: Tensor, phase: Tensor, stages: int | None = None, warmup_included: bool = False) -> Tensor:
        out = F.interpolate(frames_of(lr), scale_factor=self.config.scale, mode="bicubic", align_corners=False)
        return out.reshape(*lr.shape[:2], *out.shape[1:])


class EDSRBaseline(nn.Module):
    """EDSR-baseline (Lim et al., CVPRW 2017): head conv, residual blocks, conv, global skip, pixel-shuffle
    up-sampler, tail conv; frame by frame. Trained with L1, as EDSR was."""

    loss_description = "L1"

    def __init__(self, config: BaselineConfig) -> None:
        super().__init__()
        self.config = config
        f = config.features
        self.head = conv3x3(1, f)
        self.body = nn.Sequential(*(ResBlock(f) for _ in range(config.blocks)), conv3x3(f, f))
        self.tail = nn.Sequential(PixelShuffleUpsampler(f, config.scale), conv3x3(f, 1))

    def forward(
        self, lr: Tensor, phase: Tensor, stages: int | None = None, warmup_included: bool = False
    ) -> Tensor | tuple[Tensor]:
        x = self.head(frames_of(lr))
        out = self.tail(x + self.body(x))
        out = out.reshape(*lr.shape[:2], *out.shape[1:])
        return (out,) if self.training else out

    def loss(self, outputs: tuple[Tensor, ...], target: Tensor) -> Tensor:
        return F.l1_loss(outputs[0], target)


class FlowNet(nn.Module):
    """FRVSR's FNet at half width: an encoder–decoder from (previous LR, current LR) to a dense flow in LR pixels
    (tanh-bounded to ±max_flow). Trained from scratch by the warping loss; no external weights."""

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64), max_flow: float = 8.0) -> None:
        super().__init__()
        self.max_flow = max_flow

        def pair(cin: int, cout: int) -> list[nn.Module]:
            return [conv3x3(cin, cout), nn.LeakyReLU(0.2), conv3x3(cout, cout), nn.LeakyReLU(0.2)]

        layers: list[nn.Module] = []
        cin = 2
        for width in widths:  # encoder: three poolings
            layers += [*pair(cin, width), nn.MaxPool2d(2)]
            cin = width
        for width in reversed(widths):  # decoder: three bilinear up-samplings, twice the encoder's widths
            layers += [*pair(cin, 2 * width), nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)]
            cin = 2 * width
        layers += [conv3x3(cin, widths[0]), nn.LeakyReLU(0.2), conv3x3(widths[0], 2), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, previous: Tensor, current: Tensor) -> Tensor:  # (N, 1, H, W) ×2 -> (N, 2, H, W)
        height, width = current.shape[-2:]
        pad_h, pad_w = -height % 8, -width % 8  # three poolings need sizes divisible by 8
        x = F.pad(torch.cat([previous, current], dim=1), (0, pad_w, 0, pad_h), mode="replicate")
        return self.max_flow * self.body(x)[..., :height, :width]


def warp(image: Tensor, flow: Tensor) -> Tensor:
    """Backward warp: out(p) = image(p + flow(p)), bilinear, border-replicating; flow (N, 2, H, W) in pixels (x, y)."""
    _, _, height, width = image.shape
    ys, xs = torch.meshgrid(
        torch.arange(height, device=image.device, dtype=image.dtype),
        torch.arange(width, device=image.device, dtype=image.dtype),
        indexing="ij",
    )
    x = (xs + flow[:, 0]) * (2 / max(width - 1, 1)) - 1
    y = (ys + flow[:, 1]) * (2 / max(height - 1, 1)) - 1
    grid = torch.stack([x, y], dim=-1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


class FRVSRLight(nn.Module):
    """FRVSR-style recurrent VSR (Sajjadi et al., CVPR 2018): a flow network aligns the previous HR estimate
    to the current frame; the SR network sees the current LR frame and the warped estimate folded to LR
    resolution (space-to-depth). The first frame's previous estimate is black. Loss: MSE on the output plus the
    MSE of the flow-warped previous LR frame against the current one, as the original.
    """

    loss_description = "MSE + flow-warping MSE"

    def __init__(self, config: BaselineConfig) -> None:
        super().__init__()
        self.config = config
        f, r = config.features, config.scale
        self.flow = FlowNet()
        self.head = conv3x3(1 + r * r, f)
        self.body = nn.Sequential(*(ResBlock(f) for _ in range(config.blocks)))
        self.tail = nn.Sequential(PixelShuffleUpsampler(f, r), conv3x3(f, 1))

    def forward(
        self, lr: Tensor, phase: Tensor, stages: int | None = None, warmup_included: bool = False
    ) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        frames_of(lr)
        r = self.config.scale
        batch, frames, _, height, width = lr.shape
        estimate = lr.new_zeros(batch, 1, r * height, r * width)
        outputs, warped_lr = [], []
        for t in range(frames):
            current = lr[:, t]
            previous = lr[:, t - 1] if t > 0 else current
            flow = self.flow(previous, current)
            warped_lr.append(warp(previous, flow))
            hr_flow = r * F.interpolate(flow, scale_factor=r, mode="bilinear", align_corners=False)
            aligned = F.pixel_unshuffle(warp(estimate.detach() if self.training else estimate, hr_flow), r)
            x = self.head(torch.cat([current, aligned], dim=1))
            estimate = self.tail(x + self.body(x))
            outputs.append(estimate)
        sr = torch.stack(outputs, dim=1)
        if not self.training:
            return sr
        return sr, torch.stack(warped_lr[1:], dim=1), lr[:, 1:]

    def loss(self, outputs: tuple[Tensor, ...], target: Tensor) -> Tensor:
        sr, warped_lr, lr_target = outputs
        flow_term = F.mse_loss(warped_lr, lr_target) if warped_lr.shape[1] else sr.new_zeros(())
        return F.mse_loss(sr, target) + flow_term


def build_baseline(config: BaselineConfig) -> nn.Module:
    return {"bicubic": Bicubic, "edsr-baseline": EDSRBaseline, "frvsr-light": FRVSRLight}[config.kind](config)
