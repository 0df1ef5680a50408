"""Arithmetic cost of the network (SPEC §6), for presets, benchmarks and roofline figures."""

from __future__ import annotations

from cmrvsr_fast.model.config import ModelConfig


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
