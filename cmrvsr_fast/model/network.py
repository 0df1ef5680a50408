"""The reference CMRVSR network and its deep-supervision loss (docs/model.md).

This module defines the numbers every fast path is held to. It is written for clarity and training: frame by
frame, direction by direction, exactly the schedule of the authors' public implementation. The fast inference
schedule lives in inference/engine.py; the ConvLSTM cell's mathematics are written once, in ops/convlstm.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmrvsr_fast.model.config import ModelConfig
from cmrvsr_fast.ops.convlstm import lstm_cell


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=True)


class InBlock(nn.Module):
    """Feature extractor: Conv3×3(1→F) + PReLU with one shared slope (init 0.2)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv = conv3x3(1, features)
        self.act = nn.PReLU(num_parameters=1, init=0.2)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, 1, H, W) -> (B, F, H, W)
        return self.act(self.conv(x))


class ConvLSTMCell(nn.Module):
    """gates = Conv3×3(concat[x, h]) split as (i, f, o, g); c' = f·c + i·g; h' = o·tanh(c').

    hidden_feedback=False (Table 2, memory off) convolves concat[x, x] instead: the same parameters, but the
    hidden state never re-enters the gates.
    """

    def __init__(self, input_channels: int, hidden_channels: int, hidden_feedback: bool = True) -> None:
        super().__init__()
        if not hidden_feedback and input_channels != hidden_channels:
            raise ValueError("hidden_feedback=False needs as many input channels as hidden channels")
        self.hidden_channels = hidden_channels
        self.hidden_feedback = hidden_feedback
        self.conv = conv3x3(input_channels + hidden_channels, 4 * hidden_channels)

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        return lstm_cell(self.conv(torch.cat([x, h if self.hidden_feedback else x], dim=1)), c)


class ConvLSTM(nn.Module):
    """Stacked ConvLSTM cells; layer l's input at step t is layer l−1's h at step t."""

    def __init__(self, features: int, layers: int, hidden_feedback: bool = True) -> None:
        super().__init__()
        self.cells = nn.ModuleList(ConvLSTMCell(features, features, hidden_feedback) for _ in range(layers))

    def forward(self, sequence: list[Tensor], with_grad: list[bool]) -> list[Tensor]:
        """sequence: T_ext tensors (B, F, H, W) in processing order -> the last layer's h at every step.

        States start at zero. Steps whose `with_grad` is False run without autograd, as the warm-up steps do in
        the public implementation (the state that leaves them is therefore detached).
        """
        zeros = torch.zeros_like(sequence[0])
        state = [(zeros, zeros) for _ in self.cells]
        outputs = []
        for x, grad in zip(sequence, with_grad, strict=True):
            with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
                for layer, cell in enumerate(self.cells):
                    h, c = cell(x, *state[layer])
                    state[layer] = (h, c)
                    x = h
            outputs.append(x)
        return outputs


class RefineBlock(nn.Module):
    """Phase fusion: Conv3×3(window·(2F+1) → 2F+1) then Conv3×3(2F+1 → F), no activation between.
    (2F+1 is the frame's channels: `ModelConfig.frame_channels`, smaller in the Table 2 ablations.)

    The public implementation registers a PReLU on the block but never applies it; the slope is kept as a
    parameter (`unused_prelu`) so that checkpoints and parameter counts match.
    """

    def __init__(self, features: int, window: int, frame_channels: int | None = None) -> None:
        super().__init__()
        frame_channels = 2 * features + 1 if frame_channels is None else frame_channels
        self.fuse = conv3x3(window * frame_channels, frame_channels)
        self.project = conv3x3(frame_channels, features)
        self.unused_prelu = nn.PReLU(num_parameters=1, init=0.2)

    def forward(self, window_features: Tensor) -> Tensor:  # (B, window·(2F+1), H, W) -> (B, F, H, W)
        return self.project(self.fuse(window_features))


class OutBlock(nn.Module):
    """Up-sampler shared by every output: r = 2^k: k × [Conv3×3(F→4F), PixelShuffle(2)]; r = 3: one
    [Conv3×3(F→9F), PixelShuffle(3)]; then Conv3×3(F→1). No activation, no bicubic skip."""

    def __init__(self, features: int, scale: int) -> None:
        super().__init__()
        factors = {2: [2], 3: [3], 4: [2, 2]}[scale]
        self.up = nn.ModuleList(conv3x3(features, f * f * features) for f in factors)
        self.shuffles = nn.ModuleList(nn.PixelShuffle(f) for f in factors)
        self.final = conv3x3(features, 1)

    def forward(self, x: Tensor) -> Tensor:  # (B, F, H, W) -> (B, 1, rH, rW)
        for conv, shuffle in zip(self.up, self.shuffles, strict=True):
            x = shuffle(conv(x))
        return self.final(x)


def cyclic_indices(frames: int, warmup: int) -> list[int]:
    """Centre-frame index of every extended frame: x[T−n … T−1] ++ x[0 … T−1] ++ x[0 … n−1], wrapping when n > T."""
    return [(j - warmup) % frames for j in range(frames + 2 * warmup)]


class CMRVSR(nn.Module):
    """The phase-aware bidirectional ConvLSTM video super-resolution network.

    forward(lr, phase):
        lr:    (B, T, 1, H, W) normalised centre frames, any T >= 1, any H, W.
        phase: (B, T) phase codes of those frames.
    Eval mode returns (B, T, 1, rH, rW), the fused output of the last stage. Training mode returns the 3·S outputs
    (forward, backward, fused for each stage, in that order; 2·S without the backward direction), each
    (B, T, 1, rH, rW), for `loss`.
    The model builds the cyclic warm-up extension itself. Training clips cut from a longer cine already have their
    true neighbours as warm-up frames: pass them with `warmup_included=True`, lr then being (B, n + T + n, 1, H, W)
    and phase (B, n + T + n); the outputs cover the T centre frames.

    Where the warm-up is shorter than the fusion half-window (n < N), the fusion window of a frame near the end
    of the extended sequence reaches past it; frames outside the extended sequence contribute zeros (zero
    temporal padding). With the paper's n = 6 ≥ N = 2 this never happens.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        width = config.features
        self.in_block = InBlock(width)
        self.lstm_forward = ConvLSTM(width, config.lstm_layers, config.hidden_feedback)
        # Unidirectional (Table 2): no backward stack; its h is absent from the fusion and the residual update.
        self.lstm_backward = (
            ConvLSTM(width, config.lstm_layers, config.hidden_feedback) if config.bidirectional else None
        )
        self.refine = RefineBlock(width, config.window, config.frame_channels)
        self.out_block = OutBlock(width, config.scale)

    def forward(
        self, lr: Tensor, phase: Tensor, stages: int | None = None, warmup_included: bool = False
    ) -> Tensor | tuple[Tensor, ...]:
        self._check_inputs(lr, phase)
        stages = self.config.stages if stages is None else stages
        if stages < 1:
            raise ValueError(f"stages must be >= 1, got {stages}")
        batch, frames = lr.shape[:2]
        n, half = self.config.warmup, self.config.half_window
        if warmup_included:
            frames -= 2 * n
            if frames < 1:
                raise ValueError(f"warmup_included: {lr.shape[1]} frames hold no centre frame after 2 × {n} warm-up")
            ext = list(range(lr.shape[1]))  # index of every extended frame in `lr`
        else:
            ext = cyclic_indices(frames, n)
        ext_len = len(ext)
        is_centre = [n <= j < n + frames for j in range(ext_len)]
        centre = range(n, n + frames)

        # Phase code as a spatially constant channel, one per extended frame: (B, 1, H, W).
        phase_maps = [phase[:, t].reshape(batch, 1, 1, 1).expand(-1, 1, *lr.shape[-2:]).to(lr.dtype) for t in ext]

        features: list[Tensor] = [None] * ext_len  # type: ignore[list-item]
        centre_features = self._per_frame(self.in_block, lr[:, [ext[e] for e in centre]])
        for e, feature in zip(centre, centre_features, strict=True):
            features[e] = feature
        with torch.no_grad():
            for j in range(ext_len):
                if not is_centre[j]:
                    features[j] = self.in_block(lr[:, ext[j]])

        outputs: list[Tensor] = []
        for stage in range(stages):
            last = stage == stages - 1
            h_fwd = self.lstm_forward(features, is_centre)
            h_bwd = h_fwd  # unidirectional: the forward h stands in where the update needs a direction's h
            if self.lstm_backward is not None:
                h_bwd = self.lstm_backward(features[::-1], is_centre[::-1])[::-1]

            # Refine maps are needed at the centre frames and, for the next stage's update, at warm-up frames
            # k >= N on each side.
            needed = set(centre)
            if not last:
                needed |= {k for k in range(half, n)} | {ext_len - 1 - k for k in range(half, n)}
            refined = {}
            for j in sorted(needed):
                with torch.set_grad_enabled(is_centre[j] and torch.is_grad_enabled()):
                    refined[j] = self.refine(self._fusion_window(h_fwd, h_bwd, phase_maps, j))

            if self.training:
                outputs.append(self._upsample([features[e] + h_fwd[e] for e in centre]))
                if self.config.bidirectional:
                    outputs.append(self._upsample([features[e] + h_bwd[e] for e in centre]))
            if self.training or last:
                outputs.append(self._upsample([features[e] + refined[e] for e in centre]))

            if not last:
                features = self._residual_update(features, h_fwd, h_bwd, refined)

        return tuple(outputs) if self.training else outputs[-1]

    loss_description = "deep-supervision L1 (docs/model.md)"

    @property
    def outputs_per_stage(self) -> int:
        return self.config.directions + 1

    def loss(self, outputs: tuple[Tensor, ...], target: Tensor) -> Tensor:
        """The deep-supervision loss of this model's training outputs."""
        return deep_supervision_loss(outputs, target, self.outputs_per_stage)

    def _residual_update(
        self, features: list[Tensor], h_fwd: list[Tensor], h_bwd: list[Tensor], refined: dict[int, Tensor]
    ) -> list[Tensor]:
        """Residual of residual: centre L += R; warm-up frame k from the edge += h of its direction if k < N,
        else += R (docs/model.md)."""
        n, half = self.config.warmup, self.config.half_window
        ext_len = len(features)
        updated = list(features)
        for j in range(ext_len):
            k_lead, k_trail = j, ext_len - 1 - j
            if n <= j < ext_len - n:
                updated[j] = features[j] + refined[j]
            elif j < n:
                updated[j] = features[j] + (h_fwd[j] if k_lead < half else refined[j])
            else:
                updated[j] = features[j] + (h_bwd[j] if k_trail < half else refined[j])
        return updated

    def _fusion_window(self, h_fwd: list[Tensor], h_bwd: list[Tensor], phase_maps: list[Tensor], j: int) -> Tensor:
        """concat over i = j−N … j+N of [hF_i, hB_i, P_i]: (B, window·(2F+1), H, W); zeros outside the sequence."""
        half = self.config.half_window
        cfg = self.config
        parts = []
        for i in range(j - half, j + half + 1):
            if 0 <= i < len(h_fwd):
                own = [h_fwd[i]] + [h_bwd[i]] * cfg.bidirectional + [phase_maps[i]] * cfg.phase_fusion
                parts.append(torch.cat(own, dim=1))
            else:
                parts.append(h_fwd[0].new_zeros(h_fwd[0].shape[0], self.config.frame_channels, *h_fwd[0].shape[2:]))
        return torch.cat(parts, dim=1)

    def _upsample(self, frame_features: list[Tensor]) -> Tensor:
        """T tensors (B, F, H, W) -> (B, T, 1, rH, rW) through the shared OutBlock, all frames in one call."""
        stacked = torch.stack(frame_features, dim=1)
        batch, frames = stacked.shape[:2]
        out = self.out_block(stacked.flatten(0, 1))
        return out.reshape(batch, frames, *out.shape[1:])

    @staticmethod
    def _per_frame(block: nn.Module, lr: Tensor) -> list[Tensor]:
        """Apply a per-frame block to (B, T, C, H, W), all frames in one call -> T tensors (B, F, H, W)."""
        batch, frames = lr.shape[:2]
        out = block(lr.flatten(0, 1))
        return list(out.reshape(batch, frames, *out.shape[1:]).unbind(1))

    @staticmethod
    def _check_inputs(lr: Tensor, phase: Tensor) -> None:
        if lr.dim() != 5 or lr.shape[2] != 1:
            raise ValueError(f"lr must be (B, T, 1, H, W), got shape {tuple(lr.shape)}")
        if min(lr.shape) < 1:
            raise ValueError(f"lr has an empty dimension: {tuple(lr.shape)}")
        if not lr.is_floating_point():
            raise TypeError(f"lr must be a floating-point tensor, got {lr.dtype}")
        if phase.shape != lr.shape[:2]:
            raise ValueError(f"phase must be (B, T) = {tuple(lr.shape[:2])}, got {tuple(phase.shape)}")


def deep_supervision_loss(outputs: tuple[Tensor, ...], target: Tensor, per_stage: int = 3) -> Tensor:
    """The deep-supervision loss (docs/model.md): Σ_s 0.5^(S−1−s) · (L1(O_F) + L1(O_B) + L1(O_P)), each L1 the
    mean over frames of the per-frame mean absolute error (equal to the mean over all elements, since every frame
    has the same size).

    outputs: the 3·S training outputs, each (B, T, 1, rH, rW) (per_stage = 2 for a unidirectional ablation);
    target: (B, T, 1, rH, rW), normalised like the input.
    """
    if len(outputs) % per_stage != 0 or not outputs:
        raise ValueError(f"expected {per_stage}·S outputs (per stage: directions, then fused), got {len(outputs)}")
    stages = len(outputs) // per_stage
    total = target.new_zeros(())
    for index, output in enumerate(outputs):
        if output.shape != target.shape:
            raise ValueError(f"output {index} has shape {tuple(output.shape)}, target {tuple(target.shape)}")
        total = total + 0.5 ** (stages - 1 - index // per_stage) * F.l1_loss(output, target)
    return total
