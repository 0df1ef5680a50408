"""Arithmetic cost of the network (docs/model.md), for presets, benchmarks and roofline figures."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from cmrvsr_fast.model.baselines import BaselineConfig
from cmrvsr_fast.model.config import ModelConfig

FLOP_COUNT_SIZE = 16  # LR size of the counted forward: convolution FLOPs scale exactly with the pixels


def macs_per_lr_pixel(config: ModelConfig) -> dict[str, int]:
    """Multiply-adds per LR pixel: ConvLSTM and RefineBlock per extended frame per stage (every direction),
    OutBlock per produced output frame, InBlock per extended frame."""
    f, k2 = config.features, 9
    frame = config.frame_channels
    upsample = {2: [2], 3: [3], 4: [2, 2]}[config.scale]
    out, pixels = 0, 1
    for factor in upsample:
        out += k2 * f * factor * factor * f * pixels  # conv at the current resolution
        pixels *= factor * factor
    out += k2 * f * pixels  # the final F→1 conv at full resolution
    return {
        "in_block": k2 * f,
        "convlstm": config.directions * config.lstm_layers * k2 * (2 * f) * (4 * f),
        "refine": k2 * (config.window * frame * frame + frame * f),
        "out_block": out,
    }


def inference_flops(config: ModelConfig, frames: int, height: int, width: int, stages: int | None = None) -> float:
    """FLOPs (2 × multiply-adds) of one eval-mode cine: T + 2n extended frames through S stages of ConvLSTM
    and RefineBlock, and the OutBlock once per centre frame (only the last fused output is produced)."""
    stages = config.stages if stages is None else stages
    macs = macs_per_lr_pixel(config)
    extended = frames + 2 * config.warmup
    per_pixel = extended * (macs["in_block"] + stages * (macs["convlstm"] + macs["refine"]))
    per_pixel += frames * macs["out_block"]
    return 2.0 * per_pixel * height * width


def counted_flops_per_frame(model: torch.nn.Module, config, frames: int, size: int) -> float:
    """FLOPs of any zoo model's forward on one cine divided by its frames, counted by torch's FlopCounterMode at
    16×16 LR and scaled to size² (convolution FLOPs are proportional to the output pixels); bicubic's
    interpolation by its formula. Where the schedules agree it equals `inference_flops` / frames."""
    if isinstance(config, BaselineConfig) and config.kind == "bicubic":
        r = config.scale  # separable 4-tap passes: rows to (H, rW), then columns to (rH, rW)
        return 2.0 * 4 * (size * r * size + r * size * r * size)
    lr = torch.zeros(1, frames, 1, FLOP_COUNT_SIZE, FLOP_COUNT_SIZE)
    phase = torch.zeros(1, frames)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.cpu()(lr, phase)
    return counter.get_total_flops() * (size / FLOP_COUNT_SIZE) ** 2 / frames
