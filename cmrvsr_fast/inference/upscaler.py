"""The Python entry point for inference: `cmrvsr_fast.load()` -> Upscaler -> `upscale(cine)`.

The Upscaler takes a cine in the acquisition's own intensity units and returns the ×r cine in the same units:
mapping to the training scale (0–255, then the card's mean/std) and back is its job, and so are the phase code
(ED defaults to frame 0; ES is estimated unless given) and the device.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmrvsr_fast.cardiac.intensity import intensity_window, to_window
from cmrvsr_fast.cardiac.phase import estimate_es, phase_code
from cmrvsr_fast.data.degrade import bicubic_resize
from cmrvsr_fast.data.preprocess import denormalise, normalise
from cmrvsr_fast.inference.consistency import DEFAULT_STRENGTH, enforce_consistency
from cmrvsr_fast.inference.engine import Engine
from cmrvsr_fast.inference.runner import EngineRunner, NetworkRunner
from cmrvsr_fast.model.checkpoint import ModelCard, load_checkpoint
from cmrvsr_fast.model.network import CMRVSR

log = logging.getLogger(__name__)

DEFAULT_SCALE = 4
# LR pixels of context read on each side of a tile: the recurrence carries information sideways a few pixels per
# frame, so the margin is set by measurement of tiled against untiled output (docs/scanner-io.md).
TILE_MARGIN = 16
# Host bytes per output pixel while a cine is upscaled and written: the float32 result, its mapped-back copy,
# float64 bicubic of the clipped-off excess, the QA figure's degradation and the stored integers.
HOST_BYTES_PER_OUTPUT_PIXEL = 24
ARTIFACT_SUFFIXES = (".onnx", ".engine", ".plan", ".pt2")


def default_weights_path(scale: int = DEFAULT_SCALE) -> Path:
    """The embedded default checkpoint for ×`scale` shipped in cmrvsr_fast/weights/ (×2, ×3 and ×4)."""
    if scale not in (2, 3, 4):
        raise ValueError(f"scale must be 2, 3 or 4, got {scale!r}")
    return Path(str(resources.files("cmrvsr_fast") / "weights" / f"default-x{scale}.safetensors"))


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r}: not a device (expected auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name}: no CUDA device is visible to torch")
    return device


def available_memory_bytes(device: torch.device) -> int:
    """Memory a job may still take: the GPU's free memory, or the host's available memory (MemAvailable)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


class TooLarge(ValueError):
    """A cine that cannot be processed in this memory even in tiles (the message says how much it needs)."""


def tile_spans(length: int, core: int, margin: int) -> list[tuple[int, int, int, int]]:
    """Cover 0..length with cores of `core` pixels, each read with `margin` pixels of context on both sides:
    (read_start, read_stop, core_start, core_stop) per tile."""
    spans = []
    for start in range(0, length, core):
        stop = min(length, start + core)
        spans.append((max(0, start - margin), min(length, stop + margin), start, stop))
    return spans


class Upscaler:
    """A network runner (runner.py: the Engine for a checkpoint, or an exported artifact's runner) with everything
    needed to super-resolve cines in their own units. `Upscaler.from_model` and `load` build one."""

    def __init__(self, runner: NetworkRunner) -> None:
        self.runner = runner

    @classmethod
    def from_model(cls, model: CMRVSR, card: ModelCard, device: torch.device, **options: Any) -> Upscaler:
        """A checkpoint's model (and its card) run by the Engine; options: EngineRunner's (precision, backend,
        compile, cuda_graph, cudnn_benchmark)."""
        return cls(EngineRunner(model, card, device, **options))

    @property
    def card(self) -> ModelCard:
        return self.runner.card

    @property
    def device(self) -> torch.device:
        return self.runner.device

    @property
    def precision(self) -> str:
        return self.runner.precision

    @property
    def model(self) -> CMRVSR | None:
        """The PyTorch model behind a checkpoint's Upscaler; None for an exported artifact."""
        return self.runner.model if isinstance(self.runner, EngineRunner) else None

    @property
    def engine(self) -> Engine | NetworkRunner:
        """The Engine behind a checkpoint's Upscaler (its options and counters); an artifact's runner otherwise."""
        return self.runner.engine if isinstance(self.runner, EngineRunner) else self.runner

    @property
    def scale(self) -> int:
        return self.card.config.scale

    def check_memory(self, shape: tuple[int, ...]) -> int | None:
        """For a (T, H, W) or (S, T, H, W) input: TooLarge when its result cannot be held in host memory, else
        the tile core `upscale` will use (None: whole frames). Cheap; call it before reading a large input."""
        *_, frames, height, width = shape
        slices = shape[0] if len(shape) == 4 else 1
        need = slices * frames * height * width * self.scale**2 * HOST_BYTES_PER_OUTPUT_PIXEL
        available = available_memory_bytes(torch.device("cpu"))
        if need > available:
            raise TooLarge(f"{'×'.join(map(str, shape))} ×{self.scale}: the result needs about "
                           f"{need / 2**30:.1f} GiB of host memory, {available / 2**30:.1f} GiB are available; "
                           "split the stack or use a machine with more memory")  # fmt: skip
        return self.tile_core(frames, height, width)

    def tile_core(self, frames: int, height: int, width: int) -> int | None:
        """The LR tile core (pixels a side) for a cine whose one pass would not fit in memory, None when it fits.
        The limit is the larger of the Engine's pass budget and half of the memory available now; the core is
        the largest multiple of 8 whose tile, context margins included, fits (TooLarge when not even 32 does)."""
        ws = self.runner.working_set_bytes
        whole = ws(frames, height, width)
        if whole is None:  # a runner of fixed input shapes (an exported artifact): nothing to tile
            return None
        limit = max((self.runner.memory_budget_mb or 0) * 2**20, available_memory_bytes(self.device) / 2)
        if whole <= limit:
            return None
        for core in range(max(height, width) // 8 * 8, 31, -8):
            if ws(frames, core + 2 * TILE_MARGIN, core + 2 * TILE_MARGIN) <= limit:
                return core
        need = ws(frames, 32 + 2 * TILE_MARGIN, 32 + 2 * TILE_MARGIN)
        raise TooLarge(f"{frames} frames of {height}×{width}: even a 32×32 tile needs {need / 2**30:.1f} GiB, "
                       f"{limit / 2**30:.1f} GiB may be used on {self.device}")  # fmt: skip

    def _network(self, chunk: torch.Tensor, codes: torch.Tensor, stages: int | None, core: int | None) -> np.ndarray:
        """The runner on (N, T, 1, H, W) -> (N, T, rH, rW) float32, in overlapping tiles when `core` is given: each
        tile is read with TILE_MARGIN pixels of context and only its core is kept (docs/scanner-io.md has the
        measured difference to the untiled output)."""
        if core is None:
            return self.runner(chunk.to(self.device), codes, stages=stages)[:, :, 0].cpu().numpy()
        r, (height, width) = self.scale, chunk.shape[-2:]
        out = np.empty((*chunk.shape[:2], height * r, width * r), dtype=np.float32)
        for y0, y1, cy0, cy1 in tile_spans(height, core, TILE_MARGIN):
            for x0, x1, cx0, cx1 in tile_spans(width, core, TILE_MARGIN):
                tile = chunk[..., y0:y1, x0:x1].contiguous().to(self.device)
                sr = self.runner(tile, codes, stages=stages)[:, :, 0].cpu().numpy()
                out[:, :, cy0 * r : cy1 * r, cx0 * r : cx1 * r] = sr[
                    :, :, (cy0 - y0) * r : (cy1 - y0) * r, (cx0 - x0) * r : (cx1 - x0) * r
                ]
        return out

    def es_frame(self, cine: np.ndarray, ed: int = 0) -> int:
        """The ES frame `upscale` uses for this (T, H, W) cine or (S, T, H, W) stack when none is given: estimated
        on the first slice, on the network's 0–255 window."""
        low, high = intensity_window(np.asarray(cine))
        if high <= low:  # a constant cine has no cardiac phases to tell apart
            return ed
        return estimate_es(to_window(cine, low, high), ed=ed)

    @torch.no_grad()
    def upscale(
        self,
        cine: np.ndarray,
        ed: int = 0,
        es: int | None = None,
        stages: int | None = None,
        on_slice: Callable[[], None] | None = None,
        consistency: float = DEFAULT_STRENGTH,
        tile: int | None = None,
    ) -> np.ndarray:
        """(T, H, W) or (S, T, H, W) in any intensity units -> (…, T, rH, rW) float32 in the same units.

        The network sees what it was trained on: the whole input clipped at its 99.5 % point and scaled to
        0–255 (the training data's preparation, `intensity_window`). What lies above that ceiling (the
        brightest 0.5 % of pixels) is not lost: the excess is upscaled by bicubic interpolation and added back.
        The output is mapped back to the input's units and limited to the input's own range. One phase code
        serves every slice: ES is estimated on the first slice unless given. on_slice is called after each
        slice (progress bars). `consistency` (0–1) moves the output that fraction of the way to agreeing with the
        input: 1 is the least-squares change after which the output, degraded as the training data were,
        reproduces the input exactly; 0 leaves the network's output as it is (`consistency.enforce_consistency`).
        A cine whose pass would not fit in memory runs in overlapping spatial tiles (`check_memory`); `tile`
        forces tiles of that many LR pixels a side, 0 forbids them."""
        data = np.asarray(cine, dtype=np.float64)
        if data.ndim not in (3, 4) or min(data.shape) < 1:
            raise ValueError(f"expected a (T, H, W) cine or an (S, T, H, W) stack, got shape {data.shape}")
        if not np.isfinite(data).all():
            raise ValueError("the cine contains NaN or infinite values")
        if not 0.0 <= consistency <= 1.0:
            raise ValueError(f"consistency must lie in [0, 1], got {consistency}")
        stack = data if data.ndim == 4 else data[None]
        low, high = intensity_window(np.asarray(cine))  # integer data: the histogram rule, as in training
        r = self.scale
        if high <= low:  # a constant cine: nothing to recover, nothing to divide by
            return np.full((*stack.shape[:2], stack.shape[2] * r, stack.shape[3] * r), low, np.float32).reshape(
                *data.shape[:-2], data.shape[-2] * r, data.shape[-1] * r
            )
        grey = to_window(stack, low, high)
        excess = np.maximum(stack - high, 0.0)
        frames = stack.shape[1]
        if es is None:  # as es_frame does, on the window already computed
            es = estimate_es(grey, ed=ed)
        codes = torch.from_numpy(phase_code(frames, ed, es, self.card.config.phase_code).astype(np.float32))
        mean, std = self.card.normalisation
        out = np.empty((stack.shape[0], frames, stack.shape[2] * r, stack.shape[3] * r), dtype=np.float32)
        core = self.check_memory(stack.shape) if tile is None else (tile or None)
        chunk_size = 1 if core is not None else self.runner.cines_per_pass(frames, *stack.shape[2:], len(grey))
        for start in range(0, len(grey), chunk_size):
            chunk = torch.from_numpy(normalise(grey[start : start + chunk_size], mean, std))[:, :, None]
            chunk_codes = codes[None].expand(len(chunk), -1).to(self.device)
            out[start : start + len(chunk)] = denormalise(self._network(chunk, chunk_codes, stages, core), mean, std)
            if consistency:
                end = start + len(chunk)
                out[start:end] = enforce_consistency(out[start:end], grey[start:end], r, consistency)
            for _ in range(len(chunk)):
                if on_slice is not None:
                    on_slice()
        restored = low + out / 255.0 * (high - low)
        if excess.any():
            restored += bicubic_resize(excess, stack.shape[2] * r, stack.shape[3] * r)
        restored = np.clip(restored, float(stack.min()), float(stack.max())).astype(np.float32)
        return restored if data.ndim == 4 else restored[0]


def load(
    weights: str | Path | None = None,
    device: str | torch.device = "auto",
    precision: str = "auto",
    backend: str | Mapping[str, str] = "auto",
    compile: bool = False,
    cuda_graph: bool = False,
    cudnn_benchmark: bool = False,
    *,
    scale: int | None = None,
) -> Upscaler:
    """An Upscaler for a .safetensors checkpoint (its card beside it), the embedded default for `scale` (×4
    unless given), or an exported artifact (.onnx, .engine, .pt2 with its manifest beside it: onnxruntime,
    TensorRT, AOTInductor). With both weights and scale, the weights must be of that scale (ValueError).
    precision: "auto" (bf16 where native, else fp32), "fp32", "bf16" or "fp16"; backend: the Engine's;
    compile: torch.compile the Engine's per-step pieces for dynamic shapes, compiled once for the job (the
    compilation costs seconds up front and is repaid over many passes): for long jobs. cuda_graph (a CUDA device
    only): each pass's schedule replayed as a CUDA graph, captured once per pass shape (the four most recent kept):
    fewer kernel launches, for one cine at a time, where launches dominate. cudnn_benchmark: cuDNN times its
    convolution algorithms per shape on first use (the Engine's option; no effect off CUDA). All three ignored for
    exported artifacts."""
    path = Path(weights) if weights is not None else default_weights_path(scale or DEFAULT_SCALE)
    upscaler = _load_path(path, device, precision, backend, compile, cuda_graph, cudnn_benchmark)
    if scale is not None and upscaler.scale != scale:
        raise ValueError(f"{path} is a ×{upscaler.scale} model; asked for ×{scale}")
    return upscaler


def _load_path(path: Path, device, precision, backend, compile, cuda_graph, cudnn_benchmark) -> Upscaler:
    if path.suffix in ARTIFACT_SUFFIXES:
        from cmrvsr_fast.export.runners import load_runner  # onnxruntime/TensorRT only when asked for

        return Upscaler(load_runner(path, resolve_device(device)))
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: expected a .safetensors checkpoint with its .json card, or .onnx/.engine/.pt2")
    model, card = load_checkpoint(path)
    return Upscaler.from_model(model, card, resolve_device(device), precision=precision, backend=backend,
                               compile=compile, cuda_graph=cuda_graph, cudnn_benchmark=cudnn_benchmark)  # fmt: skip
