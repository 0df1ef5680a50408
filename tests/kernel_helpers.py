"""Inputs and instruments shared by the kernel tests (tests/test_convlstm.py, tests/test_phase_fusion.py,
tests/test_ops_tracing.py) and the kernel micro-benchmarks in benchmarks/: random ConvLSTM steps and layers with
their reference results, the fusion's inputs with the reference model's result, channels-last helpers, and a
recorder of the TMA path."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cmrvsr_fast.model.network import ConvLSTMCell


def fusion_case(frames=6, batch=2, features=5, height=7, width=9, window=5, seed=0):
    """Inputs of the op and the fusion computed the reference model's way: concatenate [hF, hB, P] over the
    zero-padded window, one convolution."""
    g = torch.Generator().manual_seed(seed)
    hf, hb = (
        torch.randn(frames, batch, features, height, width, generator=g),
        torch.randn(frames, batch, features, height, width, generator=g),
    )
    codes = torch.rand(frames, batch, generator=g) * 2 - 1
    frame_ch = 2 * features + 1
    weight = torch.randn(frame_ch, window * frame_ch, 3, 3, generator=g) * 0.1
    bias = torch.randn(frame_ch, generator=g)
    half = window // 2
    expected = []
    for i in range(frames):
        parts = []
        for d in range(window):
            j = i + d - half
            if 0 <= j < frames:
                code = codes[j].view(batch, 1, 1, 1).expand(batch, 1, height, width)
                parts.append(torch.cat([hf[j], hb[j], code], dim=1))
            else:
                parts.append(torch.zeros(batch, frame_ch, height, width))
        expected.append(F.conv2d(torch.cat(parts, dim=1), weight, bias, padding=1))
    blocks = weight.reshape(frame_ch, window, frame_ch, 3, 3)
    w = blocks[:, :, : 2 * features].permute(1, 0, 2, 3, 4).contiguous()  # (window, O, 2F, 3, 3)
    ones = torch.ones(1, 1, height, width, dtype=torch.float64)
    maps = torch.stack([F.conv2d(ones, blocks[:, d, 2 * features : 2 * features + 1].double(), padding=1)[0]
                        for d in range(window)]).float()  # fmt: skip
    table = torch.tensor([[i + d - half if 0 <= i + d - half < frames else -1 for d in range(window)]
                          for i in range(frames)], dtype=torch.int32)  # fmt: skip
    x = torch.cat([hf, hb], dim=2)
    return (x, table, w, bias, codes, maps), torch.stack(expected)


def frames_last(t: torch.Tensor) -> torch.Tensor:
    """(E, B, C, H, W) with each frame channels-last in memory (the Engine's layout)."""
    return t.reshape(-1, *t.shape[2:]).contiguous(memory_format=torch.channels_last).reshape(t.shape)


def channels_last_frames(x: torch.Tensor) -> bool:
    """Whether (E, B, C, H, W) x has each frame channels-last in memory (and is not also plainly contiguous, as
    one-channel or one-pixel frames are)."""
    return x.dim() == 5 and not x.is_contiguous() and x.permute(0, 1, 3, 4, 2).is_contiguous()


def random_step(directions, batch, features, height, width, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    cells = [ConvLSTMCell(features, features) for _ in range(directions)]
    h = torch.randn(directions, batch, features, height, width, generator=generator)
    c = torch.randn(directions, batch, features, height, width, generator=generator)
    x = torch.randn(directions, batch, features, height, width, generator=generator)
    w = torch.stack([cell.conv.weight[:, features:].detach() for cell in cells])
    # gx: the hoisted part, conv(x, W_x) + bias, as the Engine computes it
    gx = torch.stack([torch.nn.functional.conv2d(x[d], cells[d].conv.weight[:, :features], cells[d].conv.bias,
                                                 padding=1) for d in range(directions)]).detach()  # fmt: skip
    with torch.no_grad():
        expected = [cells[d](x[d], h[d], c[d]) for d in range(directions)]
    h_ref = torch.stack([e[0] for e in expected])
    c_ref = torch.stack([e[1] for e in expected])
    return (h.to(dtype), w.to(dtype), gx.to(dtype), c), (h_ref, c_ref)


def record_tma_launches(module) -> list[bool]:
    """Wrap the channels-last step kernel of `module` (kernels.convlstm_nhwc) so that each launch appends whether
    it ran the TMA path: the interpreter tests check the path was taken, not only that the numbers agree."""
    kernel, launched = module._step_kernel, []

    class Recorder:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                launched.append(kwargs["TMA"])
                return kernel[grid](*args, **kwargs)

            return launch

    module._step_kernel = Recorder()
    return launched


def random_layer(frames, batch, features, height, width, dtype=torch.float32, seed=0):
    """Each direction's hoisted gates, (E, B, 4F, H, W) channels-last per frame as the Engine's convolutions make
    them, and the two directions' recurrent weights."""
    generator = torch.Generator().manual_seed(seed)

    def gates():
        gx = torch.randn(frames * batch, 4 * features, height, width, generator=generator)
        return gx.contiguous(memory_format=torch.channels_last).reshape(frames, batch, 4 * features, height, width)

    gx_fwd, gx_bwd = gates(), gates()
    w = 0.1 * torch.randn(2, 4 * features, features, 3, 3, generator=generator)
    return gx_fwd.to(dtype), gx_bwd.to(dtype), w.to(dtype)
