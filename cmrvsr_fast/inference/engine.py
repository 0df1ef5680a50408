"""The fast inference schedule: the reference model's mathematics (eval mode) with far less waste.

What differs from model/network.py, and why:
- InBlock runs once per centre frame; warm-up frames reuse the features of the frames they copy.
- ConvLSTM runs layer by layer. conv(concat[x, h]) = conv_x(x) + conv_h(h), so each layer's input-to-gates
  convolution is hoisted out of the recurrence and run for all frames at once; only conv_h stays sequential.
- Both directions advance together through the ConvLSTM layer op (ops/convlstm.py): on PyTorch ops its reference,
  one grouped convolution (groups = 2) per step; with Triton one launch per step, reading and writing the
  sequence buffers in place.
- Phase fusion never builds the window·(2F+1)-channel concatenation. The big convolution is a sum over window
  offsets d of 129-channel convolutions; one per-frame convolution computes every offset's contribution of
  [hF, hB] at once, and the phase channel, being spatially constant, contributes P_j times a fixed map per d
  (precomputed: the zero padding makes it non-constant near the border). Both convolutions go through the window
  op (ops/phase_fusion.py), whose reference is this formulation on PyTorch ops.
- Only the last stage's fused output is upsampled, and only the refine maps that are used are computed.
- dtype policy: weights and activations in the chosen dtype, the cell state c in float32; channels_last.

That is the "hoisted" schedule, for GPUs and the kernels. On a CPU the Engine runs the "stepwise" schedule of
inference/stepwise.py instead (the reference's per-step and per-window convolutions on reused buffers), which is
faster there; `schedule` picks.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from cmrvsr_fast.inference import stepwise
from cmrvsr_fast.model.network import CMRVSR, cyclic_indices
from cmrvsr_fast.ops import winograd
from cmrvsr_fast.ops.backends import per_op_backends, resolve_backend
from cmrvsr_fast.ops.convlstm import convlstm_bidirectional_step, convlstm_layer, convlstm_layer_ref
from cmrvsr_fast.ops.phase_fusion import window_conv3x3, window_conv3x3_ref

# Table 2 ablations whose mathematics the fast schedule does not implement; they run on the reference model.
# (no-warmup and no-ror are plain settings of warmup and stages, which the schedule takes as they come.)
UNSUPPORTED_ABLATIONS = ("no-memory", "unidirectional", "no-phase-fusion")
SCHEDULES = ("auto", "hoisted", "stepwise")
CONVOLUTIONS = ("auto", "direct", "winograd")


def flat_frames(t: Tensor) -> Tensor:
    """(E, B, C, H, W) -> (E·B, C, H, W): a view when each frame is channels-last (or contiguous)."""
    return t.reshape(-1, *t.shape[2:])


def frames_channels_last(t: Tensor) -> Tensor:
    """(E, B, C, H, W) with each frame channels-last in memory, the layout every convolution output has here: the
    elementwise work between them then runs on matching, dense strides (adds of channels-last refine maps to
    NCHW features were a large part of a GPU pass)."""
    return flat_frames(t).contiguous(memory_format=torch.channels_last).reshape(t.shape)


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
    backend: "torch" (PyTorch ops: the ops' references), "triton", "cuda" (the fused kernels) or "auto" (what
    cmrvsr_fast.ops.backends picks for the device) for both fused ops, or a mapping {"convlstm_layer": …,
    "window_conv3x3": …} for each (an op left out runs on PyTorch ops); compile=True compiles the PyTorch pieces
    (the recurrent step, the window fusion) for static shapes (a recompilation per new shape), compile="dynamic"
    once for any batch and image size; a mapping can pair them with a kernel for the other op.
    schedule: "hoisted" (module docstring; the kernels, compilation, CUDA graphs and exporters run it),
    "stepwise" (inference/stepwise.py: PyTorch ops, eager, per-thread buffers kept for the last input shape;
    `release_workspace` drops them) or "auto": stepwise on a CPU where nothing asks for the hoisted one (a kernel
    backend, compile), hoisted elsewhere.
    convolution: how the stepwise schedule runs its step and fusion convolutions: "direct" (oneDNN), "winograd"
    (ops/winograd.py: F(4×4, 3×3), float32 on a CPU with the CPU extension built) or "auto": Winograd where it can
    run, direct elsewhere (`convolution` after construction says which).
    """

    ALIGN_FRAME_CHANNELS_ON = ("cuda",)  # device types whose window weights pad the frame channels (see below)

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
        schedule: str = "auto",
        convolution: str = "auto",
    ) -> None:
        per_op = per_op_backends(backend)
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
        # A named backend that cannot run raises; "auto" takes what cmrvsr_fast.ops.backends picks for the device.
        # The recurrence runs through the ConvLSTM layer op, the fusion and projection through the window op; one
        # name sets both, a mapping each, so that a benchmark can pair the best implementation of each op.
        self.backends = {op: resolve_backend(op, name, self.device) for op, name in per_op.items()}
        step, fusion = self.backends["convlstm_layer"], self.backends["window_conv3x3"]
        self.backend = step if step == fusion else f"{step} step, {fusion} fusion"
        self.schedule = choose_schedule(schedule, self.device, self.backends, compile, cuda_graph)
        self.convolution = choose_convolution(convolution, self.schedule, self.device, dtype)
        self._workspaces = stepwise.Workspaces()
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
        # The ops' references on PyTorch ops, compiled piece by piece when asked.
        self._lstm_step_eager = convlstm_bidirectional_step
        self._lstm_step = wrap(self._lstm_step_eager)
        self._fuse_window = wrap(self._fuse_window_eager)

    def _prepare_weights(self) -> None:
        """Split and stack the model's weights once (views/copies in the engine's dtype; the model is untouched):
        those both schedules use here, the rest for the schedule the Engine runs."""
        m, f, dt, dev = self.model, self.config.features, self.dtype, self.device

        def cast(t: Tensor) -> Tensor:
            return t.detach().to(dev, dt)

        self.in_w, self.in_b = cast(m.in_block.conv.weight), cast(m.in_block.conv.bias)
        self.in_slope = cast(m.in_block.act.weight)
        frame, window = self.config.frame_channels, self.config.window
        # (frame, window, 3, 3): the phase channel's kernels, window blocks in offset order −N … N (phase_maps)
        self.fuse_phase = m.refine.fuse.weight.detach().reshape(frame, window, frame, 3, 3)[:, :, 2 * f]
        # The window op's frame channels padded with zeros to a multiple of 8 on a GPU (_prepare_hoisted_weights).
        self.frame_pad = (-frame) % 8 if dev.type in self.ALIGN_FRAME_CHANNELS_ON else 0
        if self.schedule == "stepwise":
            self._prepare_stepwise_weights()
        else:
            self._prepare_hoisted_weights(cast)
        self.up = [
            (cast(c.weight), cast(c.bias), s.upscale_factor)
            for c, s in zip(m.out_block.up, m.out_block.shuffles, strict=True)
        ]
        self.final_w, self.final_b = cast(m.out_block.final.weight), cast(m.out_block.final.bias)
        self._phase_maps: dict[tuple[int, int], Tensor] = {}
        self._window_maps: dict[tuple[int, int], Tensor] = {}

    def _prepare_hoisted_weights(self, cast) -> None:
        """The hoisted schedule's weights: each layer's input and recurrent halves, the window op's per-offset
        fusion weights and its projection."""
        m, f = self.model, self.config.features
        self.lstm = []
        for fwd, bwd in zip(m.lstm_forward.cells, m.lstm_backward.cells, strict=True):
            wf, wb = fwd.conv.weight, bwd.conv.weight
            self.lstm.append(
                {
                    "x_fwd": cast(wf[:, :f]),
                    "x_bwd": cast(wb[:, :f]),
                    "b_fwd": cast(fwd.conv.bias),
                    "b_bwd": cast(bwd.conv.bias),
                    "h_pair": cast(torch.stack([wf[:, f:], wb[:, f:]])),  # the layer op's (2, 4F, F, 3, 3)
                }
            )
        frame, window = self.config.frame_channels, self.config.window
        w1 = m.refine.fuse.weight.detach()  # (frame, window·frame, 3, 3), window blocks in offset order −N … N
        blocks = w1.reshape(frame, window, frame, 3, 3)
        # Every offset's contribution of [hF, hB] from one per-frame convolution: (window·frame, 2F, 3, 3).
        per_offset = blocks[:, :, : 2 * f].permute(1, 0, 2, 3, 4)  # (window, frame, 2F, 3, 3)
        self.fuse_b = cast(m.refine.fuse.bias)
        self.proj_w, self.proj_b = cast(m.refine.project.weight), cast(m.refine.project.bias)
        # The window op's weights with the 2F + 1 = 129 frame channels padded with zeros to a multiple of 8 on a
        # GPU: cuDNN pads such tensors itself on every call (a noticeable share of a GPU pass in padding kernels).
        # The zero weights add exact zeros; the CPU keeps 129 (the padding would be 5 % more work there).
        per_offset = F.pad(per_offset, (0, 0, 0, 0, 0, 0, 0, self.frame_pad))  # (window, aligned frame, 2F, 3, 3)
        self.fuse_b_aligned = F.pad(self.fuse_b, (0, self.frame_pad)).float()
        proj_w_aligned = F.pad(self.proj_w, (0, 0, 0, 0, 0, self.frame_pad))
        # For the Triton backend stored as its channels-last kernel packs them, (window, tap, input channel, output
        # channel), and handed over as the (window, O, C, 3, 3) view of that storage: the op's packing is then free.
        layout = packed_window_view if self.backends["window_conv3x3"] == "triton" else (lambda w: w)
        self.fuse_window_w = layout(cast(per_offset))
        self.proj_window_w = layout(proj_w_aligned[None])

    def _prepare_stepwise_weights(self) -> None:
        """The stepwise schedule's weights: the reference's convolutions whole (the fusion's less its phase
        channels), in the layout of the frames they convolve (no conversion per call)."""
        m, dt, dev = self.model, self.dtype, self.device
        layout = torch.channels_last if stepwise.prefers_channels_last(dt) else torch.contiguous_format

        def cast(t: Tensor, layout: torch.memory_format = layout) -> Tensor:
            t = t.detach().to(dev, dt)
            return t.contiguous(memory_format=layout) if t.dim() == 4 else t

        # The step's and the fusion's weights: as they are, or with Winograd their transforms (float32).
        convolution = winograd.transform_weight if self.convolution == "winograd" else cast
        self.stepwise_layers = [
            stepwise.LayerWeights(
                convolution(fwd.conv.weight), cast(fwd.conv.bias), convolution(bwd.conv.weight), cast(bwd.conv.bias)
            )
            for fwd, bwd in zip(m.lstm_forward.cells, m.lstm_backward.cells, strict=True)
        ]
        frame, window, both = self.config.frame_channels, self.config.window, 2 * self.config.features
        fuse = m.refine.fuse.weight.reshape(frame, window, frame, 3, 3)[:, :, :both]  # the phase channels go
        self.stepwise_fuse = (convolution(fuse.reshape(frame, window * both, 3, 3)), cast(m.refine.fuse.bias))
        self.stepwise_project = (cast(m.refine.project.weight, torch.channels_last), cast(m.refine.project.bias))

    def release_workspace(self) -> None:
        """Free the calling thread's stepwise buffers (kept between calls for the last input shape)."""
        self._workspaces.release()

    def _workspace(self, length: int, batch: int, height: int, width: int) -> stepwise.Workspace:
        cfg = self.config
        shape = (length, batch, cfg.features, height, width, cfg.window, self.dtype)
        use = self.convolution == "winograd"
        return self._workspaces.get((*shape, use), lambda: stepwise.Workspace.allocate(*shape, self.device, use))

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

    def window_phase_maps(self, maps: Tensor) -> Tensor:
        """The window op's phase maps: aligned, float32, channels-last (as the kernel and the reference read them:
        no copy per call), made once per image size."""
        key = tuple(int(n) for n in maps.shape[-2:])
        if key not in self._window_maps:
            aligned = self.aligned_phase_maps(maps).float()
            self._window_maps[key] = aligned.contiguous(memory_format=torch.channels_last)
        return self._window_maps[key]

    @torch.no_grad()
    def __call__(self, lr: Tensor, phase: Tensor, stages: int | None = None) -> Tensor:
        CMRVSR._check_inputs(lr, phase)
        stages = self.config.stages if stages is None else stages
        if stages < 1:
            raise ValueError(f"stages must be >= 1, got {stages}")
        chunk = self.cines_per_pass(lr.shape[1], lr.shape[3], lr.shape[4], cines=lr.shape[0])
        run = self._replay if self.cuda_graph else self.forward_pass
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
                self.forward_pass(static_lr, static_phase, stages)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # Every plan was made by the warm-up; should one be missing, the heuristic's choice is capturable where a
        # benchmark's timing runs (synchronising, allocating) are not.
        with cudnn_benchmark_mode(False), torch.cuda.graph(graph):
            static_out = self.forward_pass(static_lr, static_phase, stages)
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
        """An upper estimate of the memory one cine needs in a pass: the hoisted schedule's per extended frame,
        both directions' hoisted gates (2·4F) and hidden sequences (2·2F, input and output) in the engine dtype,
        the window contributions (window·(2F+1), aligned on a GPU) and the fused features (F), the window sums in
        float32 and in the engine dtype; the stepwise schedule's workspace; plus the upsampled output in float32."""
        cfg, item = self.config, torch.tensor([], dtype=self.dtype).element_size()
        extended = frames + 2 * cfg.warmup
        upsampled = frames * cfg.scale**2 * height * width * (cfg.features + 1) * 4
        if self.schedule == "stepwise":  # its workspace, and the features, their update and the refine maps
            buffers = stepwise.Workspace.nbytes(extended, 1, cfg.features, height, width, cfg.window, self.dtype,
                                                self.convolution == "winograd")  # fmt: skip
            return buffers + extended * 3 * cfg.features * item * height * width + upsampled
        frame = cfg.frame_channels + self.frame_pad
        per_frame = ((2 * 4 + 2 * 2 * 2 + 1) * cfg.features + cfg.window * frame + frame) * item + frame * 4
        return extended * per_frame * height * width + upsampled

    def cines_per_pass(self, frames: int, height: int, width: int, cines: int = 1 << 30) -> int:
        if self.max_batch is not None:
            return self.max_batch
        if self.memory_budget_mb is None:
            return cines
        return max(1, int(self.memory_budget_mb * 2**20 // self.working_set_bytes(frames, height, width)))

    def _conv(self, x: Tensor, w: Tensor, b: Tensor | None = None, groups: int = 1) -> Tensor:
        return F.conv2d(x, w, b, padding=1, groups=groups)

    def forward_pass(self, lr: Tensor, phase: Tensor, stages: int) -> Tensor:
        """lr (B, T, 1, H, W) and phase (B, T) on the Engine's device -> (B, T, 1, rH, rW) float32: one pass without
        chunking, CUDA graphs or no_grad, for exporters (which trace it) and `__call__`."""
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
            # The frames whose refine map is used: the centre frames at the last stage; before it, also the
            # warm-up frames that the residual update does not take from h (one run, see _residual_update).
            first = n if last else min(n, half)
            count = frames if last else length - 2 * first
            # At the last stage no h outside the centre frames' windows is read: where the stepwise schedule
            # can, its forward direction stops after the last frame read, the backward one before the first.
            read = (max(0, first - half), min(length, first + count + half)) if last else (0, length)
            h_fwd, h_bwd = self._bidirectional_lstm(features, read)
            refined = self._refine(h_fwd, h_bwd, codes, maps, first, count)  # (count, B, F, H, W)
            if last:
                return self._upsample(features[first : first + count] + refined).transpose(0, 1)
            features = self._residual_update(features, h_fwd, h_bwd, refined, first)
        raise AssertionError("unreachable")

    def _bidirectional_lstm(self, features: Tensor, read: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Last-layer h of the forward and backward ConvLSTM at every extended frame: two (E, B, F, H, W); the
        stepwise schedule makes them at the frames of the span `read` only (the others are left undefined). The
        hoisted schedule, each frame channels-last: per layer each direction's hoisted gates by one convolution
        over every frame (two plain convolutions: cuDNN's grouped convolution over [h_fwd, h_bwd] was slower than
        two plain ones of the same arithmetic, with layout transforms besides), then the recurrence through the
        layer op (on PyTorch ops its reference, with the step compiled when asked)."""
        if self.schedule == "stepwise":
            length, batch, _, height, width = features.shape
            workspace = self._workspace(length, batch, height, width)
            return stepwise.bidirectional_lstm(features, self.stepwise_layers, workspace, read)
        backend = self.backends["convlstm_layer"]
        seq_fwd = seq_bwd = features
        for layer in self.lstm:
            gx_f, gx_b = self._hoisted_gates(layer, seq_fwd, seq_bwd)
            if backend == "torch":
                seq_fwd, seq_bwd = convlstm_layer_ref(gx_f, gx_b, layer["h_pair"], step=self._lstm_step)
            else:
                seq_fwd, seq_bwd = convlstm_layer(gx_f, gx_b, layer["h_pair"], backend=backend)
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

    def _refine(self, h_fwd: Tensor, h_bwd: Tensor, codes: Tensor, maps: Tensor, first: int, count: int) -> Tensor:
        """Refine maps of the ext frames first … first + count − 1, (count, B, F, H, W) with channels-last frames,
        without the window concatenation: the fusion and the projection through the window op, over the frames
        around them that exist (those outside the sequence: zero padding in time)."""
        length, batch, f, height, width = h_fwd.shape
        if self.schedule == "stepwise":
            workspace = self._workspace(length, batch, height, width)
            return stepwise.refine(h_fwd, h_bwd, codes, maps, first, count, self.stepwise_fuse,
                                   self.stepwise_project, workspace)  # fmt: skip
        window, half = self.config.window, self.config.half_window
        lo, hi = max(0, first - half), min(length, first + count + half)
        both = torch.cat([flat_frames(h_fwd[lo:hi]), flat_frames(h_bwd[lo:hi])], dim=1)  # channels-last
        both = both.reshape(hi - lo, batch, 2 * f, height, width)
        table = [[p + d - half - lo if lo <= p + d - half < hi else -1 for d in range(window)]
                 for p in range(first, first + count)]  # fmt: skip
        if self.backends["window_conv3x3"] == "torch":
            return self._fuse_window(both, table, codes[lo:hi].float(), self.window_phase_maps(maps))
        return frames_channels_last(self._fuse_window_with_kernels(both, table, codes[lo:hi].float(), maps))

    def _fuse_window_eager(self, both: Tensor, table: list[list[int]], codes: Tensor, maps: Tensor) -> Tensor:
        """The fusion and the projection through the window op's reference (the frame table as lists: static for
        torch.compile, CUDA graphs and exporters)."""
        pre = window_conv3x3_ref(both, table, self.fuse_window_w, self.fuse_b_aligned, codes, maps)
        own = [[p] for p in range(len(table))]
        return window_conv3x3_ref(pre, own, self.proj_window_w, self.proj_b.float())

    def _fuse_window_with_kernels(self, both: Tensor, table: list[list[int]], codes: Tensor, maps: Tensor) -> Tensor:
        """The fusion and the projection through the window op's kernel backend (Triton reads `both`'s
        channels-last frames as they are; the CUDA C++ twin makes its NCHW copy)."""
        backend, count = self.backends["window_conv3x3"], len(table)
        index = self._constant(table, torch.int32, both.device)
        pre = window_conv3x3(both, index, self.fuse_window_w, self.fuse_b_aligned, codes, self.window_phase_maps(maps),
                             backend=backend)  # fmt: skip
        own = torch.arange(count, dtype=torch.int32, device=both.device)[:, None]
        return window_conv3x3(pre, own, self.proj_window_w, self.proj_b.float(), backend=backend)

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


def choose_schedule(requested: str, device: torch.device, backends: Mapping[str, str], compile, cuda_graph) -> str:
    """The schedule an Engine runs: "stepwise" asked for or, with "auto", on a CPU with PyTorch ops, eager;
    "hoisted" otherwise. The stepwise schedule runs PyTorch ops eagerly: a kernel backend, compile or CUDA graphs
    with it is refused."""
    if requested not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {requested!r}")
    eager_torch = set(backends.values()) == {"torch"} and not compile and not cuda_graph
    if requested == "stepwise" and not eager_torch:
        raise ValueError("Engine: the stepwise schedule runs PyTorch ops eagerly (backend='torch', compile=False, "
                         "cuda_graph=False)")  # fmt: skip
    if requested == "auto":
        return "stepwise" if device.type == "cpu" and eager_torch else "hoisted"
    return requested


def choose_convolution(requested: str, schedule: str, device: torch.device, dtype: torch.dtype) -> str:
    """How the stepwise schedule convolves: "winograd" asked for or, with "auto", where it can run (the stepwise
    schedule, float32, a CPU, the CPU extension built); "direct" otherwise. Asked for where it cannot run, refused
    with the reason."""
    if requested not in CONVOLUTIONS:
        raise ValueError(f"convolution must be one of {CONVOLUTIONS}, got {requested!r}")
    reasons = [
        reason
        for reason, holds in (
            ("it runs in the stepwise schedule", schedule == "stepwise"),
            ("it runs on a CPU", device.type == "cpu"),
            ("it runs in float32 (in bf16 and fp16 its transforms' rounding would dominate)", dtype == torch.float32),
            (winograd.UNAVAILABLE_REASON, winograd.available()),
        )
        if not holds
    ]
    if requested == "winograd" and reasons:
        raise ValueError(f"Engine: convolution='winograd' cannot run: {'; '.join(reasons)}")
    if requested == "auto":
        return "direct" if reasons else "winograd"
    return requested


def packed_window_view(w: Tensor) -> Tensor:
    """(window, O, C, 3, 3) weights as a view of a (window, 3, 3, C, O) contiguous copy: the window op's
    channels-last kernel packs them to (window, 9, C, O) without a copy."""
    return w.permute(0, 3, 4, 2, 1).contiguous().permute(0, 4, 3, 1, 2)


def pixel_shuffle_channels_last(x: Tensor, factor: int) -> Tensor:
    """F.pixel_shuffle for a channels-last (N, C·r², H, W) tensor, as one permuting copy whose result is
    channels-last again: out[n, c, h·r + i, w·r + j] = x[n, c·r² + i·r + j, h, w]. PyTorch's own pixel_shuffle is
    slow on channels-last input on a CPU, and the NCHW detour it forces costs a GPU layout conversions around
    every OutBlock convolution."""
    n, channels, height, width = x.shape
    out_channels = channels // (factor * factor)
    nhwc = x.permute(0, 2, 3, 1).reshape(n, height, width, out_channels, factor, factor)  # a view if channels-last
    nhwc = nhwc.permute(0, 1, 4, 2, 5, 3).reshape(n, height * factor, width * factor, out_channels)
    return nhwc.permute(0, 3, 1, 2)
