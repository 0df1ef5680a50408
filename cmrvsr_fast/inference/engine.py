"""The fast inference schedule: the reference model's mathematics (eval mode) with far less waste.

What differs from model.py, and why:
- InBlock runs once per centre frame; warm-up frames reuse the features of the frames they copy.
- ConvLSTM runs layer by layer. conv(concat[x, h]) = conv_x(x) + conv_h(h), so each layer's input-to-gates
  convolution is hoisted out of the recurrence and run for all frames at once; only conv_h stays sequential.
- Both directions advance together: one grouped convolution (groups = 2) per step on PyTorch ops, or one launch
  per step of the fused layer op (Triton: reading and writing the sequence buffers in place, no copy per step).
- Phase fusion never builds the window·(2F+1)-channel concatenation. The big convolution is a sum over window
  offsets d of 129-channel convolutions; one per-frame convolution computes every offset's contribution of
  [hF, hB] at once, and the phase channel, being spatially constant, contributes P_j times a fixed map per d
  (precomputed: the zero padding makes it non-constant near the border).
- Only the last stage's fused output is upsampled, and only the refine maps that are used are computed.
- dtype policy: weights and activations in the chosen dtype, the cell state c in float32; channels_last.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from cmrvsr_fast.model.network import CMRVSR, cyclic_indices
from cmrvsr_fast.ops.backends import log_once, resolve_backend, triton_unavailable_reason
from cmrvsr_fast.ops.convlstm import convlstm_layer
from cmrvsr_fast.ops.phase_fusion import window_conv3x3

# The ops an Engine backend applies to: the ConvLSTM recurrence, and the window fusion with the projection.
FUSED_OPS = ("convlstm_step", "window_conv3x3")
# Named pairings of per-op backends (one fused kernel, PyTorch ops for the other op). With compile=True the
# Triton recurrence beside the compiled PyTorch fusion was the fastest path on an H200 (device check run 4,
# 2026-11-26: 0.168 s per 10-slice stack, 1.77× the reference).
PAIRED_BACKENDS = {"triton-step": {"convlstm_step": "triton"}, "triton-fusion": {"window_conv3x3": "triton"}}

# Table 2 ablations whose mathematics the fast schedule does not implement; they run on the reference model.
# (no-warmup and no-ror are plain settings of warmup and stages, which the schedule takes as they come.)
UNSUPPORTED_ABLATIONS = ("no-memory", "unidirectional", "no-phase-fusion")


def flat_frames(t: Tensor) -> Tensor:
    """(E, B, C, H, W) -> (E·B, C, H, W): a view when each frame is channels-last (or contiguous)."""
    return t.reshape(-1, *t.shape[2:])


def frames_channels_last(t: Tensor) -> Tensor:
    """(E, B, C, H, W) with each frame channels-last in memory, the layout every convolution output has here: the
    elementwise work between them then runs on matching, dense strides (run 4's profile, H200: 29 ms of a 172 ms
    stack went to adds of channels-last refine maps to NCHW features)."""
    return flat_frames(t).contiguous(memory_format=torch.channels_last).reshape(t.shape)


def auto_backend(op: str, device: torch.device) -> tuple[str, str | None]:
    """backend="auto": per op, the fastest implementation measured that can run on `device`, and why not a kernel
    (None when one is chosen). Device check run 4 (H200, bf16, 2026-11-26): the recurrence through the Triton
    layer op took 0.10 ms per step against 0.72 for PyTorch ops and 1.35 for the CUDA C++ steps; the window fusion
    28 ms as cuDNN convolutions against 47 (Triton) and 125 (CUDA C++). On a CPU the Triton interpreter is a
    testing aid, never faster."""
    if op == "window_conv3x3":
        return "torch", None  # cuDNN's convolutions beat both fusion kernels (above)
    if device.type != "cuda":
        return "torch", f"PyTorch ops on {device} (the Triton kernels pay off on a GPU)"
    if torch.cuda.get_device_capability(device) < (8, 0):  # bf16 tensor-core dots, and what was measured
        return "torch", f"PyTorch ops (the Triton kernels target compute capability 8.0 and newer; {device} is older)"
    reason = triton_unavailable_reason(device)
    return ("triton", None) if reason is None else ("torch", f"PyTorch ops ({reason})")


@contextlib.contextmanager
def cudnn_benchmark_mode(value: bool | None) -> Iterator[None]:
    """cuDNN's benchmark mode set to `value` for the block (None: left as the caller set it), restored after it.
    The switch is process-wide and read at each convolution call, so threads convolving at the same time see
    each other's setting. PyTorch keeps cuDNN's plans per thread, keyed by shape, dtype and layout but not by the
    mode: a shape planned before in the thread keeps its plan under either mode. Algorithms differ in summation
    order: results stay within the dtype's tolerance, not bit-identical to the heuristic's choice."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = saved if value is None else value
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


def unsupported_reason(config) -> str | None:
    """Why the Engine cannot run this configuration, or None."""
    missing = [a for a in config.ablations if a in UNSUPPORTED_ABLATIONS]
    return f"the {', '.join(missing)} ablation runs on the reference model only" if missing else None


class Engine:
    """`engine(lr, phase)` ≡ `model.eval()(lr, phase)`, sharing the model's weights.

    lr: (B, T, 1, H, W) normalised; phase: (B, T); returns (B, T, 1, rH, rW) float32.
    Slice stacks run in chunks of cines: max_batch cines per pass when given, else as many as fit
    memory_budget_mb by the working-set estimate of `working_set_bytes` (at least one); neither: one pass.
    cuda_graph=True (CUDA only) captures each pass's whole schedule as a CUDA graph on the first call with its
    shape and replays it after: one launch of the ~400 recurrent steps instead of thousands of kernel launches;
    the max_cuda_graphs most recently used shapes keep theirs (each holds its own memory pool).
    cudnn_benchmark=True lets cuDNN time its algorithms for each convolution shape on first use in the thread
    (seconds, once per shape; see `cudnn_benchmark_mode`) instead of taking its heuristic's choice: for stacks and
    long jobs of one image size; no effect off CUDA.
    backend: "torch" (PyTorch ops), "triton", "cuda" (the fused kernels) or "auto" (per op the fastest measured
    that runs here: `auto_backend`) for both fused ops, or a mapping {"convlstm_step": …, "window_conv3x3": …}
    for each (an op left out runs on PyTorch ops); compile=True compiles the per-step PyTorch pieces for static
    shapes (a recompilation per new shape), compile="dynamic" once for any batch and image size; a mapping can
    pair them with a kernel for the other op.
    """

    ALIGN_FRAME_CHANNELS_ON = ("cuda",)  # device types whose PyTorch path pads the frame channels (see below)

    def __init__(
        self,
        model: CMRVSR,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
        backend: str | Mapping[str, str] = "torch",
        compile: bool | str = False,
        max_batch: int | None = None,
        memory_budget_mb: float | None = None,
        cuda_graph: bool = False,
        max_cuda_graphs: int = 4,
        cudnn_benchmark: bool = False,
    ) -> None:
        per_op = dict(backend) if isinstance(backend, Mapping) else dict.fromkeys(FUSED_OPS, backend)
        unknown = set(per_op) - set(FUSED_OPS)
        if unknown:
            raise ValueError(f"backend: unknown op(s) {sorted(unknown)}; the fused ops are {list(FUSED_OPS)}")
        for op, name in per_op.items():
            if name not in ("torch", "triton", "cuda", "auto"):
                raise ValueError(f"backend {name!r} for {op}: choose torch, triton, cuda or auto")
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
        reason = unsupported_reason(model.config)
        if reason:
            raise ValueError(f"Engine: {reason}")
        self.model = model.eval()
        self.config = model.config
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        if cuda_graph and self.device.type != "cuda":
            raise ValueError("Engine: cuda_graph=True needs a CUDA device")
        self.max_batch = max_batch
        self.memory_budget_mb = memory_budget_mb
        # A named backend that cannot run raises; "auto" takes the fastest measured that runs and logs why once.
        # The recurrence runs through convlstm_layer, the fusion and projection through window_conv3x3, each with
        # its kernel backend (Triton or the CUDA C++ twins) or PyTorch ops; one name sets both, a mapping each
        # (unnamed ops: PyTorch) — so that a benchmark can pair the best implementation of each op.
        self.backends = {op: self._resolve(op, per_op.get(op, "torch")) for op in FUSED_OPS}
        step, fusion = self.backends["convlstm_step"], self.backends["window_conv3x3"]
        self.backend = step if step == fusion else f"{step} step, {fusion} fusion"
        # CUDA graphs: the whole multi-stage schedule of one pass is captured per input shape (and stage count) on
        # its first call and replayed after; each graph keeps its own memory pool and static input/output buffers.
        self.cuda_graph = cuda_graph
        if max_cuda_graphs < 1:
            raise ValueError(f"max_cuda_graphs must be >= 1, got {max_cuda_graphs}")
        self.max_cuda_graphs = max_cuda_graphs  # a job meets many shapes: graphs, and their pools, are bounded
        self._graphs: OrderedDict[tuple, tuple] = OrderedDict()  # least recently replayed first
        self.cudnn_benchmark = cudnn_benchmark
        self._constants: dict[tuple, Tensor] = {}
        self._prepare_weights()
        # torch.compile wraps the per-step pieces, not the whole schedule: unrolled over ~400 recurrent steps the
        # whole graph took minutes to compile on the CPU and recompiled on every call. The pieces have a handful
        # of static shapes; Inductor fuses each one's pointwise work into the convolution's epilogue or one loop.
        # compile="dynamic": one compilation for every batch and image size (long jobs over many shapes: with
        # static shapes each new one recompiles, and Dynamo refuses past its recompile limit, 8 by default).
        if compile not in (False, True, "dynamic"):
            raise ValueError(f"compile must be False, True or 'dynamic', got {compile!r}")
        dynamic = compile == "dynamic"
        wrap = (lambda fn: torch.compile(fn, dynamic=dynamic, fullgraph=True)) if compile else (lambda fn: fn)
        self._lstm_step = wrap(self._lstm_step_eager)
        self._fuse_window = wrap(self._fuse_window_eager)

    def _resolve(self, op: str, backend: str) -> str:
        if backend == "torch":
            return backend
        if backend == "auto":
            chosen, reason = auto_backend(op, self.device)
            if reason:
                log_once(f"Engine {op}: {reason}")
            return chosen
        resolved = resolve_backend(backend, self.device, "Engine", True)
        return "torch" if resolved == "reference" else resolved

    def _prepare_weights(self) -> None:
        """Split and stack the model's weights once (views/copies in the engine's dtype; the model is untouched)."""
        m, f, dt, dev = self.model, self.config.features, self.dtype, self.device

        def cast(t: Tensor) -> Tensor:
            return t.detach().to(dev, dt)

        self.in_w, self.in_b = cast(m.in_block.conv.weight), cast(m.in_block.conv.bias)
        self.in_slope = cast(m.in_block.act.weight)
        self.lstm = []
        for fwd, bwd in zip(m.lstm_forward.cells, m.lstm_backward.cells, strict=True):
            wf, wb = fwd.conv.weight, bwd.conv.weight
            self.lstm.append(
                {
                    "x_fwd": cast(wf[:, :f]),
                    "x_bwd": cast(wb[:, :f]),
                    "b_fwd": cast(fwd.conv.bias),
                    "b_bwd": cast(bwd.conv.bias),
                    "h_both": cast(torch.cat([wf[:, f:], wb[:, f:]], dim=0)),  # grouped: (8F, F, 3, 3)
                    "h_pair": cast(torch.stack([wf[:, f:], wb[:, f:]])),  # the fused layer op's (2, 4F, F, 3, 3)
                }
            )
        frame, window = self.config.frame_channels, self.config.window
        w1 = m.refine.fuse.weight.detach()  # (frame, window·frame, 3, 3), window blocks in offset order −N … N
        blocks = w1.reshape(frame, window, frame, 3, 3)
        # Every offset's contribution of [hF, hB] from one per-frame convolution: (window·frame, 2F, 3, 3).
        per_offset = blocks[:, :, : 2 * f].permute(1, 0, 2, 3, 4)  # (window, frame, 2F, 3, 3)
        self.fuse_phase = blocks[:, :, 2 * f]  # (frame, window, 3, 3): the phase channel's kernels
        self.fuse_b = cast(m.refine.fuse.bias)
        self.proj_w, self.proj_b = cast(m.refine.project.weight), cast(m.refine.project.bias)
        # The PyTorch path's copies with the 2F + 1 = 129 frame channels padded with zeros to a multiple of 8 on a
        # GPU: cuDNN pads such tensors itself on every call (run 4's profile: 11 ms of padding kernels per stack).
        # The zero weights add exact zeros; the CPU keeps 129 (the padding would be 5 % more work there).
        self.frame_pad = (-frame) % 8 if dev.type in self.ALIGN_FRAME_CHANNELS_ON else 0
        per_offset = F.pad(per_offset, (0, 0, 0, 0, 0, 0, 0, self.frame_pad))
        self.fuse_h_aligned = cast(per_offset.reshape(-1, 2 * f, 3, 3))
        self.fuse_b_aligned = F.pad(self.fuse_b, (0, self.frame_pad))
        self.proj_w_aligned = F.pad(self.proj_w, (0, 0, 0, 0, 0, self.frame_pad))
        self.up = [
            (cast(c.weight), cast(c.bias), s.upscale_factor)
            for c, s in zip(m.out_block.up, m.out_block.shuffles, strict=True)
        ]
        self.final_w, self.final_b = cast(m.out_block.final.weight), cast(m.out_block.final.bias)
        self._phase_maps: dict[tuple[int, int], Tensor] = {}
        self._fused_maps: dict[tuple[int, int], Tensor] = {}
        # The window op's weights (fused backends) stored as its channels-last kernel packs them, (window, tap,
        # input channel, output channel), and handed over as the (window, O, C, 3, 3) view of that storage: the
        # op's packing is then free (the NCHW kernels copy them to their own layout).
        self.fuse_window_w = packed_window_view(
            self.fuse_h_aligned.reshape(window, frame + self.frame_pad, 2 * f, 3, 3)
        )
        self.proj_window_w = packed_window_view(self.proj_w_aligned[None])

    def phase_maps(self, height: int, width: int) -> Tensor:
        """(window, frame, H, W): the response of each offset's phase-channel kernels to a constant 1 map."""
        key = (int(height), int(width))  # int(): under an exporter's tracer the sizes arrive as traced values
        if key not in self._phase_maps:
            ones = torch.ones(1, 1, *key, dtype=torch.float64, device=self.fuse_phase.device)
            maps = [
                F.conv2d(ones, self.fuse_phase[:, d : d + 1].double(), padding=1)[0] for d in range(self.config.window)
            ]
            self._phase_maps[key] = torch.stack(maps).to(self.device, self.dtype)
        return self._phase_maps[key]

    def aligned_phase_maps(self, maps: Tensor) -> Tensor:
        """(window, frame, H, W) phase maps with the zero channels of the PyTorch path's alignment padding."""
        return F.pad(maps, (0, 0, 0, 0, 0, self.frame_pad)) if self.frame_pad else maps

    def fused_phase_maps(self, maps: Tensor) -> Tensor:
        """The window op's phase maps: aligned, float32, channels-last (as its channels-last kernel reads them),
        made once per image size."""
        key = tuple(int(n) for n in maps.shape[-2:])
        if key not in self._fused_maps:
            aligned = self.aligned_phase_maps(maps).float()
            self._fused_maps[key] = aligned.contiguous(memory_format=torch.channels_last)
        return self._fused_maps[key]

    @torch.no_grad()
    def __call__(self, lr: Tensor, phase: Tensor, stages: int | None = None) -> Tensor:
        CMRVSR._check_inputs(lr, phase)
        stages = self.config.stages if stages is None else stages
        if stages < 1:
            raise ValueError(f"stages must be >= 1, got {stages}")
        chunk = self.cines_per_pass(lr.shape[1], lr.shape[3], lr.shape[4], cines=lr.shape[0])
        run = self._replay if self.cuda_graph else self._forward
        with cudnn_benchmark_mode(True if self.cudnn_benchmark else None):
            outputs = [
                run(lr[i : i + chunk].to(self.device), phase[i : i + chunk].to(self.device), stages)
                for i in range(0, lr.shape[0], chunk)
            ]
        return torch.cat(outputs).float()

    def _replay(self, lr: Tensor, phase: Tensor, stages: int) -> Tensor:
        """One pass through the CUDA graph captured for this shape (captured now if it is the first)."""
        key = (tuple(lr.shape), lr.dtype, phase.dtype, stages)
        if key in self._graphs:
            self._graphs.move_to_end(key)
        else:
            while len(self._graphs) >= self.max_cuda_graphs:  # the least recently used shape's graph goes
                self._graphs.popitem(last=False)
            self._graphs[key] = self._capture(lr, phase, stages)
        graph, static_lr, static_phase, static_out = self._graphs[key]
        static_lr.copy_(lr)
        static_phase.copy_(phase)
        graph.replay()
        return static_out.clone()  # the next replay overwrites the static output

    def _capture(self, lr: Tensor, phase: Tensor, stages: int) -> tuple:
        static_lr, static_phase = lr.clone(), phase.clone()
        # Warm up off the capture: Triton's JIT and autotuning, cuDNN's plans, the phase maps and index constants
        # are made here, since host work and host-to-device copies cannot be captured.
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self._forward(static_lr, static_phase, stages)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # Every plan was made by the warm-up; should one be missing, the heuristic's choice is capturable where a
        # benchmark's timing runs (synchronising, allocating) are not.
        with cudnn_benchmark_mode(False), torch.cuda.graph(graph):
            static_out = self._forward(static_lr, static_phase, stages)
        return graph, static_lr, static_phase, static_out

    def _constant(self, values: list, dtype: torch.dtype, device: torch.device) -> Tensor:
        """A small index tensor on the device. Under CUDA graphs it is made once (a host-to-device copy cannot
        be captured); otherwise afresh, so that tracers (ONNX, torch.export) see it as a constant of their own."""
        if not self.cuda_graph:
            return torch.tensor(values, dtype=dtype, device=device)
        key = (repr(values), dtype, str(device))
        if key not in self._constants:
            self._constants[key] = torch.tensor(values, dtype=dtype, device=device)
        return self._constants[key]

    def working_set_bytes(self, frames: int, height: int, width: int) -> int:
        """An upper estimate of the memory one cine needs in a pass: per extended frame, both directions'
        hoisted gates (2·4F) and hidden sequences (2·2F, input and output) in the engine dtype, the window
        contributions (window·(2F+1), aligned on a GPU) and the fused features (F), the window sums in float32 and
        in the engine dtype, plus the upsampled output in float32."""
        cfg, item = self.config, torch.tensor([], dtype=self.dtype).element_size()
        extended = frames + 2 * cfg.warmup
        frame = cfg.frame_channels + self.frame_pad
        per_frame = ((2 * 4 + 2 * 2 * 2 + 1) * cfg.features + cfg.window * frame + frame) * item + frame * 4
        upsampled = frames * cfg.scale**2 * height * width * (cfg.features + 1) * 4
        return extended * per_frame * height * width + upsampled

    def cines_per_pass(self, frames: int, height: int, width: int, cines: int = 1 << 30) -> int:
        if self.max_batch is not None:
            return self.max_batch
        if self.memory_budget_mb is None:
            return cines
        return max(1, int(self.memory_budget_mb * 2**20 // self.working_set_bytes(frames, height, width)))

    def _conv(self, x: Tensor, w: Tensor, b: Tensor | None = None, groups: int = 1) -> Tensor:
        return F.conv2d(x, w, b, padding=1, groups=groups)

    def _forward(self, lr: Tensor, phase: Tensor, stages: int) -> Tensor:
        batch, frames, _, height, width = lr.shape
        cfg = self.config
        n, half, f = cfg.warmup, cfg.half_window, cfg.features
        ext = cyclic_indices(frames, n)
        length = len(ext)

        # InBlock once per centre frame; the extended sequence gathers from it. Layout (E, B, C, H, W), each frame
        # channels-last in memory, as every convolution output here is. With one channel a tensor is contiguous in
        # both layouts, and PyTorch takes NCHW for the convolution's output unless the strides say channels-last:
        # hence the permuted view.
        x = lr.transpose(0, 1).reshape(frames * batch, height, width, 1).permute(0, 3, 1, 2).to(self.dtype)
        centre = F.prelu(self._conv(x, self.in_w, self.in_b), self.in_slope)  # (T·B, F, H, W), channels-last
        index = self._constant(ext, torch.int64, lr.device)  # a tensor index: exporters trace a list as a tuple
        # The gather on the frames' channels-last memory (index_select writes its output densely in the order of
        # the dims it is given): one copy, not a gather and a transposition.
        nhwc = centre.permute(0, 2, 3, 1).reshape(frames, batch, height, width, f)
        features = nhwc.index_select(0, index).permute(0, 1, 4, 2, 3)  # (E, B, F, H, W)
        codes = phase.transpose(0, 1).index_select(0, index).to(self.dtype)  # (E, B)
        maps = self.phase_maps(height, width)

        for stage in range(stages):
            last = stage == stages - 1
            h_fwd, h_bwd = self._bidirectional_lstm(features)
            # The frames whose refine map is used: the centre frames at the last stage; before it, also the
            # warm-up frames that the residual update does not take from h (one run, see _residual_update).
            first = n if last else min(n, half)
            count = frames if last else length - 2 * first
            refined = self._refine(h_fwd, h_bwd, codes, maps, first, count)  # (count, B, F, H, W)
            if last:
                return self._upsample(features[first : first + count] + refined).transpose(0, 1)
            features = self._residual_update(features, h_fwd, h_bwd, refined, first)
        raise AssertionError("unreachable")

    def _bidirectional_lstm(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Last-layer h of the forward and backward ConvLSTM at every extended frame: two (E, B, F, H, W), each
        frame channels-last."""
        if self.backends["convlstm_step"] != "torch":
            return self._fused_layers(features)
        length, batch, f, height, width = features.shape
        fmt = torch.channels_last
        seq_fwd = seq_bwd = features
        for layer in self.lstm:
            gx_f, gx_b = self._hoisted_gates(layer, seq_fwd, seq_bwd)
            # channels_last like every later cell state (the cell's output follows its gates' layout): a compiled
            # step then sees one layout, not a first-step variant to compile again.
            h = torch.empty(batch, 2 * f, height, width, dtype=self.dtype, device=self.device, memory_format=fmt)
            h.zero_()
            c_f = torch.zeros_like(h[:, :f], dtype=torch.float32, memory_format=fmt)
            c_b = torch.zeros_like(c_f)
            out_f = torch.empty(length * batch, f, height, width, dtype=self.dtype, device=self.device,
                                memory_format=fmt).reshape(length, batch, f, height, width)  # fmt: skip
            out_b = torch.empty_like(out_f)
            for k in range(length):
                j = length - 1 - k  # the backward direction's frame
                h, c_f, c_b = self._lstm_step(h, layer["h_both"], gx_f[k], gx_b[j], c_f, c_b)
                out_f[k], out_b[j] = h[:, :f], h[:, f:]
            seq_fwd, seq_bwd = out_f, out_b
        return seq_fwd, seq_bwd

    def _fused_layers(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """The fused backends: per layer each direction's hoisted gates by one convolution over every frame (two
        plain convolutions: in run 4 cuDNN's grouped bf16 convolution over [h_fwd, h_bwd] took 4.6 ms, plus layout
        transforms, where a plain one of the same arithmetic took ~2.6 ms), then the layer op (Triton: one launch
        per step, reading its gates and h(t−1) from, and writing h(t) into, the sequence buffers)."""
        seq_fwd = seq_bwd = features
        for layer in self.lstm:
            gx_f, gx_b = self._hoisted_gates(layer, seq_fwd, seq_bwd)
            seq_fwd, seq_bwd = convlstm_layer(gx_f, gx_b, layer["h_pair"], backend=self.backends["convlstm_step"])
        return seq_fwd, seq_bwd

    def _hoisted_gates(self, layer: dict, seq_fwd: Tensor, seq_bwd: Tensor) -> tuple[Tensor, Tensor]:
        """Each direction's input-to-gates convolution plus bias over all frames: two (E, B, 4F, H, W), each
        frame channels-last."""
        length, batch, f, height, width = seq_fwd.shape
        gates = []
        for seq, w, b in ((seq_fwd, layer["x_fwd"], layer["b_fwd"]), (seq_bwd, layer["x_bwd"], layer["b_bwd"])):
            gx = self._conv(flat_frames(seq).contiguous(memory_format=torch.channels_last), w, b)
            gates.append(gx.reshape(length, batch, 4 * f, height, width))
        return gates[0], gates[1]

    def _lstm_step_eager(
        self, h: Tensor, w_h: Tensor, gx_f: Tensor, gx_b: Tensor, c_f: Tensor, c_b: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One step of both directions: h = [h_fwd, h_bwd] (B, 2F) -> new h (channels_last), c_fwd, c_bwd."""
        f = c_f.shape[1]
        gh = self._conv(h, w_h, groups=2)  # (B, 8F): forward gates, then backward gates
        h_f, c_f = self._cell(gx_f + gh[:, : 4 * f], c_f)
        h_b, c_b = self._cell(gx_b + gh[:, 4 * f :], c_b)
        return torch.cat([h_f, h_b], dim=1).contiguous(memory_format=torch.channels_last), c_f, c_b

    def _cell(self, gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """Gates (i, f, o, g) -> (h in the engine dtype, c in float32)."""
        f = c.shape[1]
        g32 = gates.float()
        i, fg, o, g = g32[:, :f], g32[:, f : 2 * f], g32[:, 2 * f : 3 * f], g32[:, 3 * f :]
        c = torch.sigmoid(fg) * c + torch.sigmoid(i) * torch.tanh(g)
        return (torch.sigmoid(o) * torch.tanh(c)).to(self.dtype), c

    def _refine(self, h_fwd: Tensor, h_bwd: Tensor, codes: Tensor, maps: Tensor, first: int, count: int) -> Tensor:
        """Refine maps of the ext frames first … first + count − 1, (count, B, F, H, W), without the window
        concatenation; zero padding in time."""
        length, batch, f, height, width = h_fwd.shape
        window, half = self.config.window, self.config.half_window
        lo, hi = max(0, first - half), min(length, first + count + half)
        both = torch.cat([flat_frames(h_fwd[lo:hi]), flat_frames(h_bwd[lo:hi])], dim=1)  # channels-last
        if self.backends["window_conv3x3"] != "torch":
            return self._refine_fused(both.reshape(hi - lo, batch, 2 * f, height, width), codes[lo:hi], maps,
                                      first - lo, count)  # fmt: skip
        contrib = self._conv(both, self.fuse_h_aligned)  # (frames · B, window · frame, H, W), channels-last
        # Frame i takes offset d's contribution from frame j = i + d − half. Frames outside the sequence
        # contribute nothing (zero padding in time): the contributions and codes are padded with zero frames to
        # the run's reach (rarely needed: only when the warm-up is shorter than half the window).
        before, after = lo - (first - half), (first + count + half) - hi
        codes = codes[lo:hi]
        if before or after:
            zeros = [torch.empty(n * batch, *contrib.shape[1:], dtype=contrib.dtype, device=contrib.device,
                                 memory_format=torch.channels_last).zero_() for n in (before, after)]  # fmt: skip
            contrib = torch.cat([part for part in (zeros[0], contrib, zeros[1]) if part.shape[0]])  # channels-last
            codes = F.pad(codes, (0, 0, before, after))
        contrib = contrib.reshape(-1, batch, window, contrib.shape[1] // window, height, width)
        return self._fuse_window(contrib, codes, self.aligned_phase_maps(maps))

    def _refine_fused(self, both: Tensor, codes: Tensor, maps: Tensor, start: int, count: int) -> Tensor:
        """The fusion and the projection through the window-convolution op for the positions start … start +
        count − 1 of `both` (which spans every frame that exists around them); frames outside it are zero padding
        in time."""
        window, half = self.config.window, self.config.half_window
        table = [[p + d - half if 0 <= p + d - half < both.shape[0] else -1 for d in range(window)]
                 for p in range(start, start + count)]  # fmt: skip
        index = self._constant(table, torch.int32, both.device)
        # `both` has its frames channels-last: the Triton backend takes its channels-last kernel (no conversion of
        # any frame), the CUDA C++ one makes its NCHW copy. Frame channels aligned on a GPU, as for PyTorch ops.
        pre = window_conv3x3(both, index, self.fuse_window_w, self.fuse_b_aligned.float(), codes.float(),
                             self.fused_phase_maps(maps), backend=self.backends["window_conv3x3"])  # fmt: skip
        own = torch.arange(count, dtype=torch.int32, device=both.device)[:, None]
        out = window_conv3x3(pre, own, self.proj_window_w, self.proj_b.float(), backend=self.backends["window_conv3x3"])
        return frames_channels_last(out)

    def _fuse_window_eager(self, contrib: Tensor, codes: Tensor, maps: Tensor) -> Tensor:
        """contrib (N + window − 1, B, window, frame, H, W): each frame's contribution to each offset; codes
        (N + window − 1, B). For the N frames in the middle: the sum over offsets of the contributions and
        phase terms, plus the bias, in fp32, then the projection convolution over all N·B frames at once."""
        window = maps.shape[0]
        count, batch, _, frame, height, width = contrib.shape
        count -= window - 1
        # The phase terms Σ_d P_{i+d−half} · map_d of every frame as one matmul, laid out channels-last like the
        # contributions; then each offset's contribution added in place (eagerly: half the memory traffic of
        # summing fresh temporaries — this is the Engine's default path on a GPU).
        code_windows = torch.stack([codes[d : d + count] for d in range(window)], dim=-1).float()  # (N, B, window)
        maps_last = maps.float().permute(0, 2, 3, 1).reshape(window, -1)  # (window, H·W·frame)
        acc = (code_windows @ maps_last).reshape(count, batch, height, width, frame).permute(0, 1, 4, 2, 3)
        for d in range(window):
            acc.add_(contrib[d : d + count, :, d])
        acc.add_(self.fuse_b_aligned.float().view(1, 1, -1, 1, 1))
        pre = flat_frames(acc.to(self.dtype)).contiguous(memory_format=torch.channels_last)
        return self._conv(pre, self.proj_w_aligned, self.proj_b).reshape(count, batch, -1, height, width)

    def _residual_update(self, features: Tensor, h_fwd: Tensor, h_bwd: Tensor, refined: Tensor, first: int) -> Tensor:
        """features + delta at every ext frame: delta is the refine map for the run first … first + count − 1,
        and before it the forward h, after it the backward h (the warm-up frames within half a window of the
        sequence's ends, whose window would reach past it). One add per part, on matching layouts."""
        end = first + refined.shape[0]
        parts = [features[:first] + h_fwd[:first], features[first:end] + refined, features[end:] + h_bwd[end:]]
        # Concatenated as (E·B, C, H, W) channels-last tensors: a 5-d concatenation would come out in NCHW order.
        updated = torch.cat([flat_frames(part) for part in parts if part.shape[0]])
        return frames_channels_last(updated.reshape(features.shape))

    def _upsample(self, fused: Tensor) -> Tensor:
        """(T, B, F, H, W) -> (T, B, 1, rH, rW) float32 through the OutBlock, channels-last throughout."""
        frames, batch = fused.shape[:2]
        x = flat_frames(fused).contiguous(memory_format=torch.channels_last)
        for w, b, factor in self.up:
            x = pixel_shuffle_channels_last(self._conv(x, w, b), factor)
        out = self._conv(x, self.final_w, self.final_b).float()
        return out.reshape(frames, batch, *out.shape[1:])


def packed_window_view(w: Tensor) -> Tensor:
    """(window, O, C, 3, 3) weights as a view of a (window, 3, 3, C, O) contiguous copy: the window op's
    channels-last kernel packs them to (window, 9, C, O) without a copy."""
    return w.permute(0, 3, 4, 2, 1).contiguous().permute(0, 4, 3, 1, 2)


def pixel_shuffle_channels_last(x: Tensor, factor: int) -> Tensor:
    """F.pixel_shuffle for a channels-last (N, C·r², H, W) tensor, as one permuting copy whose result is
    channels-last again: out[n, c, h·r + i, w·r + j] = x[n, c·r² + i·r + j, h, w]. PyTorch's own pixel_shuffle
    took 0.74 s of a 20 s paper-x4 cine on channels-last input on the 2-core CPU, and the NCHW detour it forced
    cost the GPU layout conversions around every OutBlock convolution (run 4: 6.6 ms per stack); this OutBlock
    takes 0.74 s instead of 1.2 (bf16; 1.6 instead of 2.4 fp32) per cine on that CPU."""
    n, channels, height, width = x.shape
    out_channels = channels // (factor * factor)
    nhwc = x.permute(0, 2, 3, 1).reshape(n, height, width, out_channels, factor, factor)  # a view if channels-last
    nhwc = nhwc.permute(0, 1, 4, 2, 5, 3).reshape(n, height * factor, width * factor, out_channels)
    return nhwc.permute(0, 3, 1, 2)
