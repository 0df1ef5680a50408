"""The Engine's CPU schedule ("stepwise"): the reference's convolutions, without its allocations and copies.

On a CPU, oneDNN runs a 3×3 convolution of one frame at close to the core's peak, and what costs beyond the
arithmetic is memory traffic and allocation. Against the hoisted schedule of engine.py (which suits GPUs), this
one therefore (docs/engine.md says why each choice, docs/performance.md what it measured):
- convolves each step's [x, h] (2F → 4F channels, the reference cell's own convolution) instead of hoisting the
  input half out of the recurrence: the hoisted gates of every frame (4F channels per frame) leave the caches
  before their step reads them back;
- keeps the sequence in slot buffers where slot s holds [x_s, h_{s-1}] side by side, so that a step writes its h
  straight into the next step's convolution input: no concatenation, no copy per step;
- updates the cell in place on buffers of its own (`lstm_cell_`);
- convolves each fusion position's window of frames in one convolution (the reference's, less its phase
  channels: window·2F input channels, a multiple of 16 where window·(2F+1) is not) taken from a frame buffer
  that holds each window as one block, instead of summing per-offset contributions afterwards (five passes over
  the fused features per stage); the phase channels, constant in space, add code × their kernels' response to
  a ones map (`Engine.phase_maps`), one matrix product for every position, added as each convolution's output
  is stored;
- keeps every buffer in a workspace per input shape, reused across steps, stages and calls: buffers of megabytes
  allocated and freed per step are what glibc hands back to the kernel and faults in again.

In float32 with the CPU extension built, the step and fusion convolutions run as Winograd F(4×4, 3×3)
(ops/winograd.py: a quarter of the multiplications): per step the slot's input transform, one batched product and
the output transform fused with the cell (the gates are never stored); per stage every frame's input transform
once, each window a slice of it (a window's frames are adjacent in the channels-last frame buffer), the phase term
added by the output transform. The frames are then channels-last in float32 too.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from cmrvsr_fast.ops import winograd as winograd_ops
from cmrvsr_fast.ops.convlstm import lstm_cell_


def frame_buffer(
    frames: int, batch: int, channels: int, height: int, width: int, dtype, channels_last: bool, device=None
) -> Tensor:
    """(frames, batch, channels, H, W), every frame dense in memory, channels-last or NCHW."""
    if channels_last:
        data = torch.empty(frames, batch, height, width, channels, dtype=dtype, device=device)
        return data.permute(0, 1, 4, 2, 3)
    return torch.empty(frames, batch, channels, height, width, dtype=dtype, device=device)


def prefers_channels_last(dtype: torch.dtype) -> bool:
    """The layout the schedule keeps its frames in for `dtype`: oneDNN's bf16 and fp16 convolutions of these
    shapes run faster on channels-last data, its float32 ones on NCHW data within a pass (docs/engine.md), and
    the NCHW frame buffer lets each fusion window be a view of it."""
    return dtype != torch.float32


@dataclass
class LayerWeights:
    """One ConvLSTM layer's [x, h] → gates convolution for each direction, in the schedule's layout: (4F, 2F, 3, 3)
    weights, or with Winograd their transforms (36, 2F, 4F) and float32 biases."""

    w_fwd: Tensor
    b_fwd: Tensor
    w_bwd: Tensor
    b_bwd: Tensor


@dataclass
class Workspace:
    """Every buffer of one pass over (E, B, H, W) frames, reused by the next pass of that shape, in one layout.

    slots_fwd, slots_bwd: two (E + 1, B, 2F, H, W) slot buffers per direction, used by alternate layers. Forward:
        slot s = [x_s, h_{s−1}]; backward: slot s = [x_{s−1}, h_s]. A step convolves one slot and writes its h
        into the h half of the next slot in its direction of travel; slot 0 (forward) and slot E (backward) hold
        the zero initial h.
    cells: each direction's float32 cell state; gates: float32 gates (dtypes other than float32 are converted
    into it); scratch: float32 (B, F, H, W).
    frames: every frame's fusion input [h_fwd, h_bwd] (2F channels), with half a window of zero frames at each
        end (zero padding in time): channels-last (B, H, W, E + 2·half, 2F), each pixel's frames side by side, a
        position's window copied into `window` (B, H, W, window·2F); NCHW (B, E + 2·half, 2F, H, W), a
        position's window a view of it (`window` unused, empty).
    phase: every position's phase term, (E·B, 2F + 1, H, W); fused: every position's fusion output, the same; both
        channels-last in either layout (the projection of the fused features runs faster on them in both dtypes).
    Winograd (float32, channels-last; gates, scratch and window then empty): transformed, a step's transformed slot
    (36, B·tiles, 2F); products, its product with the weights (36, B·tiles, 4F); transformed_frames, every frame
    of the frame buffer transformed (36, B·tiles, (E + 2·half)·2F); fused_products, a window's product with the
    fusion weights (36, B·tiles, 2F + 1).
    """

    channels_last: bool
    slots_fwd: tuple[Tensor, Tensor]
    slots_bwd: tuple[Tensor, Tensor]
    cells: tuple[Tensor, Tensor]
    gates: Tensor
    scratch: Tensor
    frames: Tensor
    window: Tensor
    phase: Tensor
    fused: Tensor
    winograd: bool = False
    transformed: Tensor | None = None
    products: Tensor | None = None
    transformed_frames: Tensor | None = None
    fused_products: Tensor | None = None

    @classmethod
    def allocate(
        cls, length: int, batch: int, features: int, height: int, width: int, window: int, dtype, device=None,
        winograd: bool = False,
    ) -> Workspace:  # fmt: skip
        frame, half, last = 2 * features + 1, window // 2, prefers_channels_last(dtype) or winograd
        both = 2 * features

        def buffer(frames: int, channels: int, dtype=dtype) -> Tensor:
            return frame_buffer(frames, batch, channels, height, width, dtype, last, device)

        def positions() -> Tensor:  # channels-last in either layout
            return frame_buffer(1, length * batch, frame, height, width, dtype, True, device)[0]

        def empty() -> Tensor:
            return torch.empty(0, dtype=torch.float32, device=device)

        padded = length + 2 * half
        if last:
            frames = torch.zeros(batch, height, width, padded, both, dtype=dtype, device=device)
            window_in = empty() if winograd else torch.empty(batch, height, width, window * both, dtype=dtype,
                                                             device=device)  # fmt: skip
        else:
            frames = torch.zeros(batch, padded, both, height, width, dtype=dtype, device=device)
            window_in = empty()
        extra = {}
        if winograd:
            tiles = batch * winograd_ops.tiles(height, width)

            def points(channels: int) -> Tensor:
                return torch.empty(winograd_ops.POINTS, tiles, channels, dtype=torch.float32, device=device)

            extra = dict(winograd=True, transformed=points(both), products=points(4 * features),
                         transformed_frames=points(padded * both), fused_products=points(frame))  # fmt: skip
        return cls(
            channels_last=last, slots_fwd=(buffer(length + 1, 2 * features), buffer(length + 1, 2 * features)),
            slots_bwd=(buffer(length + 1, 2 * features), buffer(length + 1, 2 * features)),
            cells=(buffer(1, features, torch.float32)[0], buffer(1, features, torch.float32)[0]),
            gates=empty() if winograd else buffer(1, 4 * features, torch.float32)[0],
            scratch=empty() if winograd else buffer(1, features, torch.float32)[0],
            frames=frames, window=window_in, phase=positions(), fused=positions(), **extra,
        )  # fmt: skip

    @staticmethod
    def nbytes(
        length: int, batch: int, features: int, height: int, width: int, window: int, dtype, winograd: bool = False
    ) -> int:
        """What `allocate` takes, without allocating."""
        item = torch.tensor([], dtype=dtype).element_size()
        frame, both, pixels = 2 * features + 1, 2 * features, batch * height * width
        window_in = window * both if prefers_channels_last(dtype) and not winograd else 0
        in_dtype = 4 * (length + 1) * both + (length + window - 1) * both + window_in + 2 * length * frame
        float32 = 2 * features if winograd else (2 + 4 + 1) * features  # cells; gates and scratch
        points = batch * winograd_ops.tiles(height, width) * winograd_ops.POINTS * 4 if winograd else 0
        transformed = both + 4 * features + (length + window - 1) * both + frame
        return pixels * (in_dtype * item + float32 * 4) + points * transformed

    def store_frames(self, h_fwd: Tensor, h_bwd: Tensor) -> None:
        """The fusion inputs of every frame: h_fwd, h_bwd (E, B, F, H, W)."""
        length, _, f = h_fwd.shape[:3]
        half = (self.frames.shape[3 if self.channels_last else 1] - length) // 2
        if self.channels_last:
            centre = self.frames[:, :, :, half : half + length]  # (B, H, W, E, 2F)
            centre[..., :f].copy_(h_fwd.permute(1, 3, 4, 0, 2))
            centre[..., f:].copy_(h_bwd.permute(1, 3, 4, 0, 2))
        else:
            centre = self.frames[:, half : half + length]  # (B, E, 2F, H, W)
            centre[:, :, :f].copy_(h_fwd.transpose(0, 1))
            centre[:, :, f:].copy_(h_bwd.transpose(0, 1))

    def window_at(self, start: int, window: int) -> Tensor:
        """(B, window·2F, H, W): the frames start … start + window − 1 of the padded frame buffer, their channels
        concatenated in frame order, as the reference's fusion convolution takes them (less the phase channels)."""
        if self.channels_last:
            batch, height, width, _, frame = self.frames.shape  # frame: 2F here
            self.window.view(batch, height, width, window, frame).copy_(self.frames[:, :, :, start : start + window])
            return self.window.permute(0, 3, 1, 2)
        batch, _, frame, height, width = self.frames.shape
        return self.frames[:, start : start + window].reshape(batch, window * frame, height, width)


class Workspaces:
    """Each thread's workspace for the shape it ran last (threads sharing an Engine, as the DICOM node's workers
    do, must not share buffers; a new shape replaces the old one, so a job over many image sizes keeps one)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self, key: tuple, make) -> Workspace:
        held = getattr(self._local, "held", None)
        if held is None or held[0] != key:
            self._local.held = None  # the old buffers go before the new ones are made
            self._local.held = (key, make())
        return self._local.held[1]

    def release(self) -> None:
        """Drop this thread's buffers (the next pass makes them again)."""
        self._local.held = None


def bidirectional_lstm(
    features: Tensor, layers: list[LayerWeights], ws: Workspace, read: tuple[int, int] | None = None
) -> tuple[Tensor, Tensor]:
    """The last layer's h of each direction at the frames of `features` (E, B, F, H, W): two (E, B, F, H, W)
    views into the workspace, valid until its next use. read = (lo, hi): only frames lo … hi − 1 are read
    afterwards, so the forward direction stops after frame hi − 1 and the backward one before frame lo (h at
    frames outside the span are left undefined); None: every frame."""
    length, _, f = features.shape[:3]
    lo, hi = (0, length) if read is None else read
    inputs_fwd = inputs_bwd = features
    c_fwd, c_bwd = ws.cells
    for index, layer in enumerate(layers):
        slots_fwd, slots_bwd = ws.slots_fwd[index % 2], ws.slots_bwd[index % 2]
        slots_fwd[:length, :, :f].copy_(inputs_fwd)
        slots_bwd[1:, :, :f].copy_(inputs_bwd)
        slots_fwd[0, :, f:].zero_()
        slots_bwd[length, :, f:].zero_()
        c_fwd.zero_()
        c_bwd.zero_()
        for k in range(max(hi, length - lo)):
            j = length - 1 - k  # the backward direction's frame
            if k < hi:
                _step(slots_fwd[k], layer.w_fwd, layer.b_fwd, c_fwd, slots_fwd[k + 1, :, f:], ws)
            if j >= lo:
                _step(slots_bwd[j + 1], layer.w_bwd, layer.b_bwd, c_bwd, slots_bwd[j, :, f:], ws)
        inputs_fwd, inputs_bwd = slots_fwd[1:, :, f:], slots_bwd[:length, :, f:]
    return inputs_fwd, inputs_bwd


def _step(slot: Tensor, w: Tensor, b: Tensor, c: Tensor, h_out: Tensor, ws: Workspace) -> None:
    if ws.winograd:
        winograd_ops.input_transform(slot, ws.transformed)
        torch.bmm(ws.transformed, w, out=ws.products)
        winograd_ops.output_lstm_cell(ws.products, b, c, h_out)
        return
    gates = F.conv2d(slot, w, b, padding=1)
    if gates.dtype != torch.float32:
        gates = ws.gates.copy_(gates)  # the cell in float32, as in every schedule
    lstm_cell_(gates, c, h_out, ws.scratch)


def refine(
    h_fwd: Tensor, h_bwd: Tensor, codes: Tensor, maps: Tensor, first: int, count: int, fuse: tuple[Tensor, Tensor],
    project: tuple[Tensor, Tensor], ws: Workspace,
) -> Tensor:  # fmt: skip
    """The refine maps of frames first … first + count − 1: (count, B, F, H, W). codes (E, B); maps (window,
    2F + 1, H, W): each offset's phase kernels' response to a ones map; fuse: the fusion convolution's weight less
    its phase channels, (2F + 1, window·2F, 3, 3), or with Winograd its transform (36, window·2F, 2F + 1), and its
    bias; project: the projection's (weight, bias); all in the workspace's dtype, the fusion's weight in its
    layout, the projection's channels-last."""
    batch, f, height, width = h_fwd.shape[1:]
    window = maps.shape[0]
    half = window // 2
    ws.store_frames(h_fwd, h_bwd)
    # The phase term of every position: Σ_d codes[p + d − half] · maps[d] (zero outside the sequence), one product.
    padded_codes = F.pad(codes.transpose(0, 1), (half, half)).transpose(0, 1)  # (E + 2·half, B)
    code_windows = padded_codes.unfold(0, window, 1)[first : first + count].reshape(count * batch, window)
    maps_rows = maps.permute(0, 2, 3, 1).reshape(window, -1)  # (window, H·W·(2F + 1)), as the phase buffer's rows
    phase = ws.phase[: count * batch]
    torch.mm(code_windows.to(maps.dtype), maps_rows, out=phase.permute(0, 2, 3, 1).view(count * batch, -1))
    fused = ws.fused[: count * batch]
    if ws.winograd:
        # The frame buffer (B, H, W, E + 2·half, 2F) as one image of (E + 2·half)·2F channels: transformed once,
        # a window of frames is then a slice of the transformed channels.
        padded = ws.frames.shape[3]
        image = ws.frames.view(batch, height, width, padded * 2 * f).permute(0, 3, 1, 2)
        winograd_ops.input_transform(image, ws.transformed_frames)
    for position in range(count):
        # Frames p − half … p + half of position p start at p in the padded frame buffer.
        block = slice(position * batch, (position + 1) * batch)
        if ws.winograd:
            start = (first + position) * 2 * f
            torch.bmm(ws.transformed_frames[:, :, start : start + window * 2 * f], fuse[0], out=ws.fused_products)
            winograd_ops.output_transform(ws.fused_products, fuse[1], fused[block], addend=phase[block])
        else:
            conv = F.conv2d(ws.window_at(first + position, window), *fuse, padding=1)
            torch.add(conv, phase[block], out=fused[block])
    refined = F.conv2d(fused, *project, padding=1)
    return refined.reshape(count, batch, f, height, width)
