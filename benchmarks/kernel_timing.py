"""The two fused ops alone: parity against their references and time per call, each backend side by side.

    python benchmarks/kernel_timing.py [--cpu-rehearsal] [--tma]

On a GPU (a step of `make device-check`): the ConvLSTM step of both directions at F = 64 (10 cines at 64×64 and one
at 128×128) and the window fusion (34 positions × 10 cines at 64×64), in fp32 and bf16, through the Triton kernels
(kernels/convlstm_nhwc.py, kernels/phase_fusion_nhwc.py; the fusion also at the Engine's aligned 136 outputs on
channels-last frames), the PyTorch references and the CUDA C++ twins when the extension is built, on the same
values; then a whole layer's recurrence (42 frames, bf16) through the layer op, per step; then the channels-last
step under each of its autotuning configurations in turn (with --tma only the TMA tiles, at both sizes); times are
`triton.testing.do_bench` medians in ms. With --cpu-rehearsal the same code runs on the CPU at toy sizes in fp32
(Triton under TRITON_INTERPRET=1, a wall clock for do_bench); only the GPU sizes, bf16, the CUDA C++ twins and
do_bench itself are left to the GPU. Prints one JSON row per measurement as it goes (a run stopped at its limit
keeps them), then the list.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the tests' inputs and references
import triton
from cmrvsr_fast.kernels.convlstm_nhwc import (
    _CONFIGS,
    _TMA_CONFIGS,
    INTERPRETER_CONFIG,
    _tma_tiles_that_fit,
    convlstm_step_nhwc,
    pack_weights,
    tma_applies,
)
from kernel_helpers import fusion_case, random_layer, random_step
from tolerances import relative_l2

from cmrvsr_fast.ops import extension as _ext
from cmrvsr_fast.ops.convlstm import convlstm_layer, convlstm_layer_ref, convlstm_step_cuda, convlstm_step_ref
from cmrvsr_fast.ops.phase_fusion import window_conv3x3, window_conv3x3_ref


def wall_clock_ms(fn, repeats: int = 3) -> float:
    """The CPU rehearsal's stand-in for do_bench: median wall time of a few calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 1, 3, 4, 2).contiguous()  # (D, B, C, H, W) -> (D, B, H, W, C)


def step_rows(device: str, shapes: list[tuple], dtypes: list[torch.dtype], timer, cuda_twin: bool):
    for shape in shapes:
        for dtype in dtypes:
            inputs, (h_ref, c_ref) = random_step(*shape, dtype=dtype)
            inputs = [t.to(device) for t in inputs]
            # The channels-last Triton step (the layout change is outside the timing).
            h0, w, gx, c0 = inputs
            nhwc = (channels_last(h0), pack_weights(w), channels_last(gx), channels_last(c0))
            h, c = convlstm_step_nhwc(*nhwc)
            row = {"op": "convlstm_step", "shape": list(shape), "dtype": str(dtype),
                   "rel_l2_h": relative_l2(h.permute(0, 1, 4, 2, 3).cpu(), h_ref),
                   "rel_l2_c": relative_l2(c.permute(0, 1, 4, 2, 3).cpu(), c_ref)}  # fmt: skip
            row["triton_ms"] = timer(partial(convlstm_step_nhwc, *nhwc))
            row["reference_ms"] = timer(partial(convlstm_step_ref, *inputs))
            if cuda_twin:
                row["cuda_ms"] = timer(partial(convlstm_step_cuda, *inputs))
            yield row


def step_work(shape: tuple, dtype: torch.dtype) -> tuple[float, float]:
    """(FLOPs, bytes) of one step of D directions × B cines, F hidden channels, H × W: the recurrent 3×3
    convolution (2 · pixels · 9F · 4F), and the least memory traffic any kernel has — h(t−1) and the hoisted
    gates read once, c read and written in float32, h(t) written, the weights read once. Their ratios to a
    tile's time say how far it is from the compute and the memory floors."""
    directions, batch, features, height, width = shape
    pixels = directions * batch * height * width
    size = torch.finfo(dtype).bits // 8
    flops = 2 * pixels * 9 * features * 4 * features
    traffic = pixels * features * (size + 4 * size + 2 * 4 + size) + directions * 9 * features * 4 * features * size
    return flops, traffic


def tile_rows(device: str, shapes: list[tuple], dtypes: list[torch.dtype], timer, configs: list):
    """The channels-last step under each autotuning configuration in turn, side by side on the same values: what
    the autotuner chose between (GATES_FIRST, the hoisted gates loaded before or after the K loop, and the TMA
    tiles included). A tile that fails is recorded with its error, and the others still run."""
    for shape, dtype in itertools.product(shapes, dtypes):
        inputs, (h_ref, c_ref) = random_step(*shape, dtype=dtype)
        h0, w, gx, c0 = (t.to(device) for t in inputs)
        nhwc = (channels_last(h0), pack_weights(w), channels_last(gx), channels_last(c0))
        tma = tma_applies(nhwc[0], nhwc[1], shape[2], [0, h0[0].numel()])  # else a TMA tile runs pointer loads
        hopper = device == "cpu" or torch.cuda.get_device_capability()[0] >= 9  # (the interpreter takes them)
        flops, traffic = step_work(shape, dtype)
        # As the autotuner would: no row tile wider than the image (at 64² a 128-pixel row is half padding).
        for config in _tma_tiles_that_fit(configs, {"W": shape[4]}):
            row = {"op": "convlstm_step_nhwc_tile", "shape": list(shape), "dtype": str(dtype),
                   "config": {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages},
                   "tma_applied": config.kwargs["TMA"] and tma and hopper}  # fmt: skip
            if config.kwargs["TMA"] and not hopper:
                yield {**row, "skipped": "TMA needs compute capability 9.0 or later"}
                continue
            try:
                h, c = convlstm_step_nhwc(*nhwc, config=config)
                row["rel_l2_h"] = relative_l2(h.permute(0, 1, 4, 2, 3).float().cpu(), h_ref)
                row["rel_l2_c"] = relative_l2(c.permute(0, 1, 4, 2, 3).cpu(), c_ref)
                row["ms"] = timer(partial(convlstm_step_nhwc, *nhwc, config=config))
                row["tflops"] = flops / row["ms"] / 1e9
                row["least_traffic_gb_per_s"] = traffic / row["ms"] / 1e6  # bytes per ms → GB/s
            except Exception as error:  # noqa: BLE001 — e.g. a tile this GPU cannot run; the row says why
                row["error"] = f"{type(error).__name__}: {error}"[:500]
            yield row


def layer_rows(device: str, shapes: list[tuple], dtypes: list[torch.dtype], timer, cuda_twin: bool):
    """The whole recurrence of one bidirectional layer (the Engine's unit): the Triton layer op (no copy per
    step) against the same steps as PyTorch ops or CUDA C++ launches with the per-step stack and scatter; ms per
    step (per frame)."""
    for shape in shapes:
        for dtype in dtypes:
            inputs = [t.to(device) for t in random_layer(*shape, dtype=dtype)]
            frames = shape[0]
            outputs = convlstm_layer(*inputs, backend="triton")
            expected = convlstm_layer_ref(*inputs)
            errors = [relative_l2(o.float().cpu(), r.float().cpu()) for o, r in zip(outputs, expected, strict=True)]
            row = {"op": "convlstm_layer", "shape": list(shape), "dtype": str(dtype), "rel_l2": max(errors)}
            row["triton_ms_per_step"] = timer(partial(convlstm_layer, *inputs, backend="triton")) / frames
            row["reference_ms_per_step"] = timer(partial(convlstm_layer_ref, *inputs)) / frames
            if cuda_twin:
                row["cuda_ms_per_step"] = timer(partial(convlstm_layer, *inputs, backend="cuda")) / frames
            yield row


def fusion_rows(device: str, cases: list[dict], dtypes: list[torch.dtype], timer, cuda_twin: bool):
    for case in cases:
        for dtype in dtypes:
            (x, table, w, bias, codes, maps), expected = fusion_case(**case)
            inputs = [t.to(device) for t in (x.to(dtype), table, w.to(dtype), bias, codes, maps)]
            out = window_conv3x3(*inputs, backend="triton")
            row = {"op": "window_conv3x3", "case": case, "dtype": str(dtype),
                   "rel_l2": relative_l2(out.float().cpu(), expected)}  # fmt: skip
            row["triton_ms"] = timer(partial(window_conv3x3, *inputs, backend="triton"))
            row["reference_ms"] = timer(partial(window_conv3x3_ref, *inputs))
            if cuda_twin:
                row["cuda_ms"] = timer(partial(window_conv3x3, *inputs, backend="cuda"))
            # The kernel on frames channels-last in memory (no conversion) at the Engine's GPU shapes: outputs
            # aligned to a multiple of 8 with zero weights (129 -> 136), as the Engine pads them.
            frames_last = inputs[0].permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
            pad = -inputs[2].shape[1] % 8
            aligned = [frames_last, inputs[1], F.pad(inputs[2], (0, 0, 0, 0, 0, 0, 0, pad)), F.pad(inputs[3], (0, pad)),
                       inputs[4], F.pad(inputs[5], (0, 0, 0, 0, 0, pad))]  # fmt: skip
            out = window_conv3x3(*aligned, backend="triton")
            row["rel_l2_nhwc"] = relative_l2(out[:, :, : expected.shape[2]].float().cpu(), expected)
            row["nhwc_output_channels"] = out.shape[2]
            row["triton_nhwc_ms"] = timer(partial(window_conv3x3, *aligned, backend="triton"))
            yield row


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-rehearsal", action="store_true", help="toy sizes on the CPU (TRITON_INTERPRET=1)")
    parser.add_argument("--tma", action="store_true", help="only the TMA tiles (without: everything but them)")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.cpu_rehearsal:
        device, timer, dtypes = "cpu", wall_clock_ms, [torch.float32]  # no bf16 under the interpreter
        # The second shape stands for 128×128: wide enough (33 pixels) for the 32-pixel TMA row below.
        shapes, cases = [(2, 1, 8, 6, 7), (2, 1, 8, 3, 33)], [dict(frames=3, batch=1)]
        layers, layer_dtypes = [(3, 1, 8, 6, 7)], dtypes
        tiles = [triton.Config({**INTERPRETER_CONFIG, "GATES_FIRST": first}) for first in (False, True)]
        # TMA boxes of a 4 × 8 patch and of one 32-pixel row (past the 7-pixel image's right edge).
        tma_tiles = [triton.Config({**config.kwargs, "TMA": True, "BLOCK_W": width}) for config in tiles
                     for width in (config.kwargs["BLOCK_W"], config.kwargs["BLOCK_P"])]  # fmt: skip
    else:
        from triton.testing import do_bench

        device, dtypes = "cuda", [torch.float32, torch.bfloat16]

        def timer(fn) -> float:
            return do_bench(fn, return_mode="median")  # do_bench's default is the mean

        shapes = [(2, 10, 64, 64, 64), (2, 1, 64, 128, 128)]
        cases = [dict(frames=34, batch=10, features=64, height=64, width=64)]
        layers, layer_dtypes = [(42, 10, 64, 64, 64)], [torch.bfloat16]  # a paper-x4 stack's layer, 42 frames
        tiles, tma_tiles = _CONFIGS, _TMA_CONFIGS  # bf16
    cuda_twin = device == "cuda" and _ext.available()
    rows = []
    # Most wanted first: the step's tiles side by side (the autotuner's candidates), the layer through the
    # autotuned layer op, the step against PyTorch and CUDA C++, the fusion, the 128×128 step. A run stopped at
    # its limit loses the least wanted. The TMA tiles, never yet run on a GPU, only with --tma: the device check
    # runs them in a process of their own after these rows (a tile that faults poisons its process's CUDA
    # context), at both shapes (the 128-pixel rows' own width).
    if args.tma:
        measured = itertools.chain(tile_rows(device, shapes[:1], layer_dtypes, timer, tma_tiles),
                                   tile_rows(device, shapes[1:], layer_dtypes, timer, tma_tiles))  # fmt: skip
    else:
        measured = itertools.chain(tile_rows(device, shapes[:1], layer_dtypes, timer, tiles),
                                   layer_rows(device, layers, layer_dtypes, timer, cuda_twin),
                                   step_rows(device, shapes[:1], dtypes, timer, cuda_twin),
                                   fusion_rows(device, cases, dtypes, timer, cuda_twin),
                                   step_rows(device, shapes[1:], dtypes, timer, cuda_twin))  # fmt: skip
    for row in measured:  # printed as soon as measured
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
