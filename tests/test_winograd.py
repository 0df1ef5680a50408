"""Winograd F(4×4, 3×3) on the CPU (ops/winograd.py, csrc/cpu): the algorithm, the compiled transforms against
the direct convolution and the cell, what they refuse, and when the Engine runs them. The Engine's parity with
them is in test_engine.py."""

from __future__ import annotations

import importlib
import os
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import make_model
from tolerances import RELATIVE_L2, relative_l2

import cmrvsr_fast
from cmrvsr_fast import ModelConfig
from cmrvsr_fast.inference.engine import Engine
from cmrvsr_fast.ops import winograd
from cmrvsr_fast.ops.convlstm import lstm_cell

SKIPPED_BUILD = os.environ.get("CMRVSR_SKIP_CPU_BUILD") == "1"
needs_extension = pytest.mark.skipif(not winograd.available(), reason=winograd.UNAVAILABLE_REASON or "built")


def channels_last(*shape: int, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(*shape) * scale).contiguous(memory_format=torch.channels_last)


@pytest.mark.skipif(SKIPPED_BUILD, reason="CMRVSR_SKIP_CPU_BUILD=1: the CPU extension was not built")
def test_the_cpu_extension_was_built() -> None:
    """The install builds it wherever a C++ compiler is (the float32 CPU default depends on it)."""
    assert winograd.available(), winograd.UNAVAILABLE_REASON


def test_the_matrices_compute_a_correlation() -> None:
    """Aᵀ [(G g) ⊙ (Bᵀ d)] = the 4 outputs of a 3-tap correlation of 6 inputs, in exact arithmetic."""
    bt, g, at = winograd.matrices()
    d, taps = torch.randn(6, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    expected = torch.stack([(d[i : i + 3] * taps).sum() for i in range(4)])
    torch.testing.assert_close(at @ ((g @ taps) * (bt @ d)), expected, rtol=1e-12, atol=1e-12)


@needs_extension
@pytest.mark.parametrize(
    "shape",
    [(1, 128, 256, 64, 64), (2, 5, 7, 13, 10), (3, 70, 9, 1, 1), (1, 3, 4, 4, 8), (1, 129, 65, 6, 9)],
    ids=lambda s: "x".join(map(str, s)),
)  # batch, in channels, out channels, H, W: the step's; edge tiles; one pixel; one tile; channels past a block
def test_the_convolution_is_conv2d(shape: tuple[int, ...]) -> None:
    batch, cin, cout, height, width = shape
    x, w, b = channels_last(batch, cin, height, width), torch.randn(cout, cin, 3, 3) / (3 * cin**0.5), torch.randn(cout)
    out = winograd.conv3x3(x, winograd.transform_weight(w), b)
    assert out.shape == (batch, cout, height, width) and out.is_contiguous(memory_format=torch.channels_last)
    expected = F.conv2d(x.double(), w.double(), b.double(), padding=1)
    assert relative_l2(out, expected) <= RELATIVE_L2[torch.float32]


@needs_extension
def test_the_output_transform_writes_its_pixels_only_and_adds_the_addend() -> None:
    """Into a view of a wider buffer (the Engine's fusion output is a block of its positions buffer)."""
    x, w, b = channels_last(2, 6, 7, 5), torch.randn(4, 6, 3, 3), torch.randn(4)
    wide = torch.full((2, 10, 7, 5), 7.0).contiguous(memory_format=torch.channels_last)
    addend_wide = channels_last(2, 10, 7, 5)
    out, addend = wide[:, 3:7], addend_wide[:, 3:7]
    products = torch.bmm(winograd.input_transform(x), winograd.transform_weight(w))
    winograd.output_transform(products, b, out, addend=addend)
    expected = F.conv2d(x.double(), w.double(), b.double(), padding=1) + addend.double()
    assert relative_l2(out, expected) <= RELATIVE_L2[torch.float32]
    assert torch.all(wide[:, :3] == 7.0) and torch.all(wide[:, 7:] == 7.0)


@needs_extension
def test_the_fused_cell_is_the_cell() -> None:
    """Gates over a wide range (the activations' approximations at their extremes), h written into the h half
    of a slot ([x, h] channels side by side), as the schedule does; the x half untouched."""
    batch, features, height, width = 2, 20, 9, 6
    x = channels_last(batch, 2 * features, height, width)
    w, b = torch.randn(4 * features, 2 * features, 3, 3) * 0.5, torch.randn(4 * features) * 3
    c = channels_last(batch, features, height, width, scale=2.0)
    u = winograd.transform_weight(w)
    gates = winograd.conv3x3(x, u, b).double()  # the same gates, stored: what differs below is the cell
    assert gates.abs().max() > 30  # saturating values are covered
    h_ref, c_ref = lstm_cell(gates, c.double())
    slot = torch.full((batch, 2 * features, height, width), 5.0).contiguous(memory_format=torch.channels_last)
    c_out = c.clone()
    winograd.output_lstm_cell(torch.bmm(winograd.input_transform(x), u), b, c_out, slot[:, features:])
    torch.testing.assert_close(c_out.double(), c_ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(slot[:, features:].double(), h_ref, rtol=1e-6, atol=1e-6)
    assert torch.all(slot[:, :features] == 5.0)


@needs_extension
def test_what_the_transforms_refuse() -> None:
    x = torch.randn(1, 8, 5, 5)  # NCHW: channels not contiguous
    with pytest.raises(ValueError, match="channels-last"):
        winograd.input_transform(x)
    with pytest.raises(ValueError, match="float32"):
        winograd.input_transform(x.double().contiguous(memory_format=torch.channels_last))
    good = x.contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match=r"\(36, 4, 8\)"):
        winograd.input_transform(good, out=torch.empty(36, 4, 7))
    products, out = torch.zeros(36, 4, 3), channels_last(1, 3, 5, 5)
    with pytest.raises(ValueError, match="bias"):
        winograd.output_transform(products, torch.zeros(4), out)
    with pytest.raises(ValueError, match="addend"):
        winograd.output_transform(products, torch.zeros(3), out, addend=torch.zeros(1, 3, 5, 5))
    with pytest.raises(ValueError, match="3x3 kernels"):
        winograd.transform_weight(torch.zeros(4, 4, 5, 5))
    meta = torch.zeros(36, 4, 3, device="meta")  # no CPU memory behind its pointer: it must not reach the kernels
    with pytest.raises(ValueError, match="CPU tensor"):
        winograd.output_transform(meta, torch.zeros(3), out)
    with pytest.raises(ValueError, match="CPU tensor"):
        winograd.output_transform(products, torch.zeros(3, device="meta"), out)


@needs_extension
def test_the_convolution_ignores_the_default_dtype() -> None:
    x, w, b = channels_last(1, 3, 5, 6), torch.randn(2, 3, 3, 3), torch.randn(2)
    expected = winograd.conv3x3(x, winograd.transform_weight(w), b)
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert torch.equal(winograd.conv3x3(x, winograd.transform_weight(w), b), expected)
    finally:
        torch.set_default_dtype(saved)


def test_the_engine_runs_winograd_where_it_can(tiny_config: ModelConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_model(tiny_config).eval()
    assert Engine(model).convolution == ("winograd" if winograd.available() else "direct")
    assert Engine(model, dtype=torch.bfloat16).convolution == "direct"
    assert Engine(model, schedule="hoisted").convolution == "direct"
    assert Engine(model, convolution="direct").convolution == "direct"
    with pytest.raises(ValueError, match="float32"):
        Engine(model, dtype=torch.bfloat16, convolution="winograd")
    with pytest.raises(ValueError, match="stepwise schedule"):
        Engine(model, schedule="hoisted", convolution="winograd")
    with pytest.raises(ValueError, match="convolution must be one of"):
        Engine(model, convolution="fft")
    monkeypatch.setattr(winograd, "available", lambda: False)
    monkeypatch.setattr(winograd, "UNAVAILABLE_REASON", "the CPU extension cmrvsr_fast._cpu is not built")
    assert Engine(model).convolution == "direct"
    with pytest.raises(ValueError, match="_cpu is not built"):
        Engine(model, convolution="winograd")


def test_a_missing_extension_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cmrvsr_fast._cpu", None)  # makes `from cmrvsr_fast import _cpu` raise
    monkeypatch.delattr(cmrvsr_fast, "_cpu", raising=False)
    try:
        missing = importlib.reload(winograd)
        assert not missing.available()
        with pytest.raises(RuntimeError, match="not built or cannot load"):
            missing.input_transform(channels_last(1, 2, 3, 3))
    finally:
        monkeypatch.undo()
        importlib.reload(winograd)
