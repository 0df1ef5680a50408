"""The window-decomposed phase fusion: the reference against the fusion convolution over the concatenated window
(docs/model.md), and the Triton kernel under TRITON_INTERPRET=1; the GPU tests are marked."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import run_under_triton_interpreter
from kernel_helpers import frames_last, fusion_case
from tolerances import RELATIVE_L2 as TOLERANCE
from tolerances import TF32_RELATIVE_L2, relative_l2

from cmrvsr_fast.ops.phase_fusion import frame_runs, window_conv3x3, window_conv3x3_ref


def test_reference_twin_is_the_concatenated_fusion():
    inputs, expected = fusion_case()
    assert relative_l2(window_conv3x3_ref(*inputs), expected) <= TOLERANCE[torch.float32]
    residual = torch.randn_like(expected)
    assert relative_l2(window_conv3x3_ref(*inputs, residual=residual), expected + residual) <= 1e-5
    with pytest.raises(ValueError, match="codes and maps"):
        window_conv3x3(*inputs[:5])
    x, table, w, bias, codes, maps = inputs
    with pytest.raises(ValueError, match=r"maps has shape \(5, 11, 7, 9\), expected \(5, 12, 7, 9\)"):
        window_conv3x3(x, table, F.pad(w, (0, 0, 0, 0, 0, 0, 0, 1)), F.pad(bias, (0, 1)), codes, maps)
    with pytest.raises(ValueError, match="residual has shape"):
        window_conv3x3(*inputs, residual=residual[:, :, :5])


def per_position_sum(x, table, w, bias, codes=None, maps=None):
    """The op's definition position by position and offset by offset, as plainly as it can be written."""
    out = []
    for row in table.tolist():
        acc = bias.view(-1, 1, 1).expand(x.shape[1], -1, *x.shape[3:]).clone()
        for d, j in enumerate(row):
            if j >= 0:
                acc = acc + F.conv2d(x[j], w[d], padding=1)
                if codes is not None:
                    acc = acc + codes[j].view(-1, 1, 1, 1) * maps[d]
        out.append(acc)
    return torch.stack(out)


def test_the_reference_takes_any_frame_table():
    """Frames in any order, repeated, missing (−1) between others: the reference's runs of consecutive frames
    (slices of its per-frame convolution) add up to the per-position sum; a table given as lists is the same."""
    (x, _, w, bias, codes, maps), _ = fusion_case(frames=6, window=3)
    table = torch.tensor([[0, 1, 2], [5, -1, 3], [2, 3, 4], [-1, -1, -1], [1, 1, 1]], dtype=torch.int32)
    expected = per_position_sum(x, table, w, bias, codes, maps)
    assert relative_l2(window_conv3x3_ref(x, table, w, bias, codes, maps), expected) <= TOLERANCE[torch.float32]
    assert torch.equal(window_conv3x3_ref(x, table.tolist(), w, bias), window_conv3x3_ref(x, table, w, bias))
    assert relative_l2(window_conv3x3_ref(x, table, w, bias), per_position_sum(x, table, w, bias)) <= 1e-6
    # The projection form (each position its own frame, no phase term): one convolution with its bias.
    own = torch.arange(6)[:, None]
    residual = torch.randn(6, 2, w.shape[1], 7, 9)
    got = window_conv3x3_ref(x, own, w[:1], bias, residual=residual)
    assert relative_l2(got, per_position_sum(x, own, w[:1], bias) + residual) <= 1e-6
    assert frame_runs([-1, 3, 4, 5, 0, -1, 1, 1]) == [(1, 3, 3), (4, 0, 1), (6, 1, 1), (7, 1, 1)]


INTERPRETED = """
import torch
from kernel_helpers import fusion_case
from tolerances import relative_l2
from cmrvsr_fast.ops.phase_fusion import window_conv3x3
worst = 0.0
for shape in [dict(frames=4, batch=1), dict(frames=3, batch=2, features=9, height=5, width=4)]:
    inputs, expected = fusion_case(**shape)
    worst = max(worst, relative_l2(window_conv3x3(*inputs, backend="triton"), expected))
residual = torch.randn_like(expected)
worst = max(worst, relative_l2(window_conv3x3(*inputs, residual=residual, backend="triton"), expected + residual))
assert worst <= 1e-5, worst
print("worst", worst)
"""


def test_triton_kernel_under_the_interpreter():
    assert "worst" in run_under_triton_interpreter(INTERPRETED)


# The kernel on x whose frames are channels-last in memory (the Engine's layout: read without a conversion); the
# output's frames are channels-last too. Awkward sizes: 18 and 10 input channels, 11 outputs, images past the
# tile edges, frames outside the sequence (-1), the residual channels-last, the projection form (window 1, no
# phase term).
INTERPRETED_NHWC = """
import torch
from kernel_helpers import fusion_case, frames_last, channels_last_frames
from tolerances import relative_l2
from cmrvsr_fast.ops.phase_fusion import window_conv3x3, window_conv3x3_ref

worst = 0.0
for shape in [dict(frames=4, batch=1), dict(frames=3, batch=2, features=9, height=5, width=4),
              dict(frames=6, batch=1, features=5, height=6, width=7)]:
    (x, table, w, bias, codes, maps), expected = fusion_case(**shape)
    got = window_conv3x3(frames_last(x), table, w, bias, codes, maps, backend="triton")
    assert channels_last_frames(got), got.stride()
    worst = max(worst, relative_l2(got, expected))
    residual = frames_last(torch.randn_like(expected))
    got = window_conv3x3(frames_last(x), table, w, bias, codes, maps, residual=residual, backend="triton")
    worst = max(worst, relative_l2(got, expected + residual))
    own = torch.arange(expected.shape[0], dtype=torch.int32)[:, None]
    project = torch.randn(1, 10, expected.shape[2], 3, 3) * 0.1
    project_bias = torch.randn(10)
    got = window_conv3x3(frames_last(expected), own, project, project_bias, backend="triton")
    assert channels_last_frames(got), got.stride()
    worst = max(worst, relative_l2(got, window_conv3x3_ref(expected, own, project, project_bias)))
assert worst <= 1e-5, worst
print("worst", worst)
"""


def test_channels_last_triton_kernel_under_the_interpreter():
    assert "worst" in run_under_triton_interpreter(INTERPRETED_NHWC)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_kernels_on_gpu(backend, dtype):
    if backend == "triton":
        pytest.importorskip("triton", reason="triton is not installed")
    inputs, expected = fusion_case(frames=10, batch=3, features=64, height=37, width=53)
    x, table, w, bias, codes, maps = inputs
    got = window_conv3x3(x.cuda().to(dtype), table.cuda(), w.cuda().to(dtype), bias.cuda(), codes.cuda(),
                         maps.cuda(), backend=backend)  # fmt: skip
    assert relative_l2(got.cpu(), expected) <= TOLERANCE[dtype]
    # The projection form: window 1, no phase term, with the residual.
    residual = torch.randn_like(expected)
    own = torch.arange(10, dtype=torch.int32)[:, None]
    project = torch.randn(1, 64, 129, 3, 3) * 0.05
    expected_p = window_conv3x3_ref(expected, own, project, torch.zeros(64), residual=residual[:, :, :64])
    got_p = window_conv3x3(expected.cuda().to(dtype), own.cuda(), project.cuda().to(dtype), torch.zeros(64).cuda(),
                           residual=residual[:, :, :64].cuda().to(dtype), backend=backend)  # fmt: skip
    assert relative_l2(got_p.float().cpu(), expected_p) <= TOLERANCE[dtype]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_channels_last_kernel_on_gpu(dtype):
    """The channels-last kernel through the op (autotuned), as the Engine calls it: frames channels-last, 136
    aligned outputs for the fusion (zero weights past 129), then the projection 136 → 64."""
    pytest.importorskip("triton", reason="triton is not installed")
    (x, table, w, bias, codes, maps), expected = fusion_case(frames=10, batch=3, features=64, height=37, width=53)
    frame = expected.shape[2]  # 2F + 1 = 129
    pad = -frame % 8
    w, bias, maps = F.pad(w, (0, 0, 0, 0, 0, 0, 0, pad)), F.pad(bias, (0, pad)), F.pad(maps, (0, 0, 0, 0, 0, pad))
    got = window_conv3x3(frames_last(x).cuda().to(dtype), table.cuda(), w.cuda().to(dtype), bias.cuda(),
                         codes.cuda(), maps.cuda(), backend="triton")  # fmt: skip
    assert got.permute(0, 1, 3, 4, 2).is_contiguous()  # the channels-last kernel's output
    assert relative_l2(got[:, :, :frame].float().cpu(), expected) <= TOLERANCE[dtype]
    assert got[:, :, frame:].abs().max() == 0
    own = torch.arange(expected.shape[0], dtype=torch.int32)[:, None]
    project, project_bias = torch.randn(1, 64, frame + pad, 3, 3) * 0.05, torch.randn(64)
    wanted = window_conv3x3_ref(got.float().cpu(), own, project, project_bias)
    got_p = window_conv3x3(got, own.cuda(), project.cuda().to(dtype), project_bias.cuda(), backend="triton")
    assert relative_l2(got_p.float().cpu(), wanted) <= TOLERANCE[dtype]


@pytest.mark.gpu
@pytest.mark.parametrize("tile", range(6))
def test_every_channels_last_fusion_tile_on_gpu(tile):
    """Each bf16 autotuning configuration of the channels-last fusion on its own, at the Engine's 136 aligned
    outputs, so that a tile that faults or computes wrongly is found even where the autotuner would not pick it."""
    triton = pytest.importorskip("triton", reason="triton is not installed")
    from cmrvsr_fast.kernels.phase_fusion_nhwc import _CONFIGS, pack_weights, window_conv3x3_nhwc

    assert len(_CONFIGS) == 6  # (the parametrisation above)
    (x, table, w, bias, codes, maps), expected = fusion_case(frames=6, batch=2, features=64, height=37, width=53)
    pad = -expected.shape[2] % 8
    w, bias, maps = F.pad(w, (0, 0, 0, 0, 0, 0, 0, pad)), F.pad(bias, (0, pad)), F.pad(maps, (0, 0, 0, 0, 0, pad))
    args = (x.permute(0, 1, 3, 4, 2).contiguous().cuda().bfloat16(), table.cuda(), pack_weights(w).cuda().bfloat16(),
            bias.cuda(), codes.cuda(), maps.permute(0, 2, 3, 1).contiguous().cuda())  # fmt: skip
    try:
        out = window_conv3x3_nhwc(*args, config=_CONFIGS[tile])
    except triton.runtime.errors.OutOfResources as error:  # a GPU with less shared memory than Hopper's
        pytest.skip(f"tile {_CONFIGS[tile]} does not fit this GPU: {error}")
    out = out.permute(0, 1, 4, 2, 3).float().cpu()
    assert relative_l2(out[:, :, : expected.shape[2]], expected) <= TOLERANCE[torch.bfloat16]
    assert out[:, :, expected.shape[2] :].abs().max() == 0


@pytest.mark.gpu
def test_triton_float32_follows_pytorchs_tf32_switch():
    """As for the ConvLSTM step: TF32 tensor cores while cuDNN's TF32 switch is on, IEEE float32 otherwise."""
    pytest.importorskip("triton", reason="triton is not installed")
    inputs, expected = fusion_case(frames=10, batch=3, features=64, height=37, width=53)
    torch.backends.cudnn.allow_tf32 = True  # the autouse fixture restores it
    got = window_conv3x3(*(t.cuda() for t in inputs), backend="triton")
    assert 1e-6 < relative_l2(got.cpu(), expected) <= TF32_RELATIVE_L2
