"""The cost model against docs/model.md (figures derived there independently from the layer shapes)."""

from __future__ import annotations

import pytest

from cmrvsr_fast import ModelConfig
from cmrvsr_fast.model.cost import inference_flops, macs_per_lr_pixel


def test_paper_x4_costs_per_pixel() -> None:
    macs = macs_per_lr_pixel(ModelConfig.from_name("paper-x4"))
    assert macs["convlstm"] / 1e6 == pytest.approx(1.77, abs=0.005)
    assert macs["refine"] / 1e6 == pytest.approx(0.82, abs=0.005)
    assert macs["out_block"] / 1e6 == pytest.approx(0.75, abs=0.005)


def test_paper_x4_cine_cost() -> None:
    flops = inference_flops(ModelConfig.from_name("paper-x4"), frames=30, height=64, width=64)
    assert flops / 1e12 == pytest.approx(2.85, rel=0.01)


def test_cost_scales_with_stages_and_scale() -> None:
    config = ModelConfig.from_name("paper-x4")
    assert inference_flops(config, 30, 64, 64, stages=1) < inference_flops(config, 30, 64, 64) / 2
    x2, x3 = macs_per_lr_pixel(ModelConfig.from_name("paper-x2")), macs_per_lr_pixel(ModelConfig.from_name("paper-x3"))
    assert x2["out_block"] == 9 * 64 * 256 + 9 * 64 * 4
    assert x3["out_block"] == 9 * 64 * 576 + 9 * 64 * 9
