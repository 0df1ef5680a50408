"""The ConvLSTM layer op: its references against the cells of the reference model, the Triton kernel (under
TRITON_INTERPRET=1 on the CPU) and the CUDA C++ step (gpu-marked) against them, at awkward shapes; the backend
policy of cmrvsr_fast/ops/backends.py, for both fused ops."""

from __future__ import annotations

import pytest
import torch
from conftest import run_under_triton_interpreter
from kernel_helpers import random_layer, random_step
from tolerances import RELATIVE_L2 as TOLERANCE
from tolerances import TF32_RELATIVE_L2, relative_l2

from cmrvsr_fast.ops import backends
from cmrvsr_fast.ops.backends import BackendUnavailable, auto_backend, resolve_backend
from cmrvsr_fast.ops.convlstm import (
    convlstm_bidirectional_step,
    convlstm_layer,
    convlstm_layer_ref,
    convlstm_step_cuda,
    convlstm_step_ref,
)


@pytest.mark.parametrize("shape", [(2, 1, 8, 5, 7), (2, 2, 16, 9, 4), (1, 1, 20, 3, 3), (2, 1, 33, 6, 11)])
def test_reference_twin_matches_the_cells(shape):
    inputs, (h_ref, c_ref) = random_step(*shape)
    h, c = convlstm_step_ref(*inputs)
    assert relative_l2(h, h_ref) <= TOLERANCE[torch.float32] and relative_l2(c, c_ref) <= TOLERANCE[torch.float32]
    assert c.dtype == torch.float32


def test_the_bidirectional_step_is_the_reference_step():
    """The reference layer's step (channels-last [h_fwd, h_bwd], one grouped convolution) computes what the
    reference step does for the two directions."""
    (h, w, gx, c), (h_ref, c_ref) = random_step(2, 2, 8, 5, 7)
    last = torch.channels_last
    h_both = torch.cat([h[0], h[1]], dim=1).contiguous(memory_format=last)
    h_next, c_fwd, c_bwd = convlstm_bidirectional_step(h_both, w.reshape(-1, 8, 3, 3), gx[0], gx[1], c[0], c[1])
    assert h_next.is_contiguous(memory_format=last)
    assert relative_l2(h_next, torch.cat([h_ref[0], h_ref[1]], dim=1)) <= TOLERANCE[torch.float32]
    assert relative_l2(torch.stack([c_fwd, c_bwd]), c_ref) <= TOLERANCE[torch.float32]
    assert c_fwd.dtype == torch.float32


def test_resolving_a_backend_by_name(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    cpu = torch.device("cpu")
    assert resolve_backend("convlstm_layer", "auto", cpu) == "torch"
    assert resolve_backend("window_conv3x3", "torch", cpu) == "torch"
    with pytest.raises(BackendUnavailable, match="backend 'triton' was asked for"):
        resolve_backend("convlstm_layer", "triton", cpu)
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("convlstm_layer", "reference", cpu)
    with pytest.raises(BackendUnavailable, match="backend 'cuda' was asked for, but the CUDA extension"):
        resolve_backend("window_conv3x3", "cuda", cpu)
    if triton_importable():  # named, the interpreter runs; "auto" never takes it
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        assert resolve_backend("convlstm_layer", "triton", cpu) == "triton"
        assert resolve_backend("convlstm_layer", "auto", cpu) == "torch"


def triton_importable() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


AUTO_POLICY = [  # (op, device type, capability, triton importable, extension built) -> what "auto" picks
    ("convlstm_layer", "cpu", None, True, True, "torch"),
    ("convlstm_layer", "cuda", (9, 0), True, True, "triton"),
    ("convlstm_layer", "cuda", (8, 0), True, False, "triton"),
    ("convlstm_layer", "cuda", (8, 6), False, True, "torch"),  # no Triton: PyTorch ops beat the CUDA C++ steps
    ("convlstm_layer", "cuda", (9, 0), False, False, "torch"),
    ("convlstm_layer", "cuda", (7, 5), True, True, "torch"),  # older than the kernels target
    ("window_conv3x3", "cuda", (9, 0), True, True, "torch"),  # cuDNN beat both fusion kernels
    ("window_conv3x3", "cuda", (8, 0), False, True, "torch"),
    ("window_conv3x3", "cpu", None, False, False, "torch"),
]


@pytest.mark.parametrize(("op", "device", "capability", "triton", "extension", "expected"), AUTO_POLICY)
def test_the_auto_policy(op, device, capability, triton, extension, expected):
    assert auto_backend(op, device, capability, triton, extension) == expected


def test_auto_reads_the_devices_facts(monkeypatch):
    """resolve_backend("auto") on a CUDA device asks the policy with that device's capability and availability
    (both faked here: no GPU is needed to resolve a name)."""
    gpu = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setitem(backends.UNAVAILABLE_REASONS, "triton", lambda device: "triton is not installed")
    monkeypatch.setitem(backends.UNAVAILABLE_REASONS, "cuda", lambda device: None)
    assert resolve_backend("convlstm_layer", "auto", gpu) == "torch"
    assert resolve_backend("convlstm_layer", "cuda", gpu) == "cuda"  # named, it runs
    assert resolve_backend("window_conv3x3", "auto", gpu) == "torch"
    monkeypatch.setitem(backends.UNAVAILABLE_REASONS, "triton", lambda device: None)
    assert resolve_backend("convlstm_layer", "auto", gpu) == "triton"
    with pytest.raises(ValueError, match="unknown op"):
        auto_backend("convlstm_step", "cuda", (9, 0), True, True)


INTERPRETED = """
import torch
from tolerances import relative_l2, RELATIVE_L2 as TOLERANCE

# The Engine with the Triton kernels against the reference model, at an awkward shape (n > T wraps, odd sizes).
from conftest import make_inputs, make_model
from cmrvsr_fast import ModelConfig
from cmrvsr_fast.inference.engine import Engine
torch.manual_seed(5)
model = make_model(ModelConfig(scale=4, features=6, lstm_layers=2, window=5, warmup=3, stages=2)).eval()
lr, phase = make_inputs(2, 2, 5, 7)
engine = Engine(model, backend="triton")
assert engine.backend == "triton"
with torch.no_grad():
    engine_error = relative_l2(engine(lr, phase), model(lr, phase))
assert engine_error <= TOLERANCE[torch.float32], engine_error
print("engine", engine_error)
"""


def test_the_engine_with_triton_under_the_interpreter():
    assert "engine" in run_under_triton_interpreter(INTERPRETED)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_step_on_gpu(dtype):
    """The CUDA C++ step (the "cuda" layer's building block) against the cells."""
    inputs, (h_ref, c_ref) = random_step(2, 3, 64, 37, 53, dtype=dtype)
    h, c = convlstm_step_cuda(*(t.cuda() for t in inputs))
    assert relative_l2(h.cpu(), h_ref) <= TOLERANCE[dtype] and relative_l2(c.cpu(), c_ref) <= TOLERANCE[dtype]


@pytest.mark.gpu
def test_triton_float32_follows_pytorchs_tf32_switch():
    """With cuDNN's TF32 switch on (PyTorch's default) the fp32 Triton step runs on the tensor cores, as the
    reference's convolutions do: a TF32-sized error, not an IEEE one; off (every other test), IEEE float32."""
    pytest.importorskip("triton", reason="triton is not installed")
    from cmrvsr_fast.kernels.convlstm_nhwc import convlstm_step_nhwc, pack_weights

    (h, w, gx, c), (h_ref, _) = random_step(2, 3, 64, 37, 53)
    last = lambda t: t.permute(0, 1, 3, 4, 2).contiguous().cuda()  # noqa: E731
    torch.backends.cudnn.allow_tf32 = True  # the autouse fixture restores it
    h_next, _ = convlstm_step_nhwc(last(h), pack_weights(w.cuda()), last(gx), last(c))
    assert 1e-6 < relative_l2(h_next.permute(0, 1, 4, 2, 3).cpu(), h_ref) <= TF32_RELATIVE_L2


def test_float32_is_ieee_on_the_cpu_whatever_the_tf32_switch():
    from cmrvsr_fast.kernels.conv_tiles import ieee_float32

    torch.backends.cudnn.allow_tf32 = True  # the autouse fixture restores it
    assert ieee_float32(torch.zeros(1)) and not ieee_float32(torch.zeros(1, dtype=torch.bfloat16))


NHWC_INTERPRETED = """
import itertools
import torch
from kernel_helpers import random_step, record_tma_launches
from tolerances import relative_l2
from cmrvsr_fast.kernels import convlstm_nhwc
from cmrvsr_fast.kernels.convlstm_nhwc import convlstm_step_nhwc, pack_weights
worst = 0.0
TILES = [(False, 8), (True, 8), (True, 32)]  # (TMA, BLOCK_W) of a 32-pixel tile: pointers, 4 × 8 patch, one row
shapes = [(2, 1, 8, 5, 7), (2, 2, 16, 9, 4), (1, 1, 20, 3, 3), (2, 1, 33, 6, 11), (2, 2, 24, 10, 19), (2, 1, 8, 3, 40)]
# The hoisted gates added after or before the K loop; pointer loads, or TMA boxes of a 4 × 8 patch or of one row
# of 32 pixels (F = 33 has unaligned rows: pointer loads even then; 10 × 19 pixels: patches past the image's bottom
# and right edges; rows past its right edge; 40 pixels wide: two row programs per image row).
launched = record_tma_launches(convlstm_nhwc)
for gates_first, (tma, width), shape in itertools.product((False, True), TILES, shapes):
    convlstm_nhwc.INTERPRETER_CONFIG.update(GATES_FIRST=gates_first, TMA=tma, BLOCK_W=width)
    (h, w, gx, c), (h_ref, c_ref) = random_step(*shape)
    last = lambda t: t.permute(0, 1, 3, 4, 2).contiguous()  # (D, B, C, H, W) -> (D, B, H, W, C)
    h_next, c_next = convlstm_step_nhwc(last(h), pack_weights(w), last(gx), last(c))
    assert launched[-1] == (tma and shape[2] % 4 == 0), (shape, tma)  # TMA where float32 rows are 16-byte multiples
    first = lambda t: t.permute(0, 1, 4, 2, 3)
    worst = max(worst, relative_l2(first(h_next), h_ref), relative_l2(first(c_next), c_ref))
assert worst <= 1e-5, worst
print("worst", worst)
"""


def test_channels_last_variant_under_the_interpreter():
    """The channels-last step (kernels/convlstm_nhwc.py, the layer op's kernel) computes the same step at awkward
    shapes."""
    assert "worst" in run_under_triton_interpreter(NHWC_INTERPRETED)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_channels_last_variant_on_gpu(dtype):
    pytest.importorskip("triton", reason="triton is not installed")
    from cmrvsr_fast.kernels.convlstm_nhwc import convlstm_step_nhwc, pack_weights

    (h, w, gx, c), (h_ref, c_ref) = random_step(2, 3, 64, 37, 53, dtype=dtype)
    last = lambda t: t.permute(0, 1, 3, 4, 2).contiguous().cuda()  # noqa: E731
    h_next, c_next = convlstm_step_nhwc(last(h), pack_weights(w.cuda()), last(gx), last(c))
    h_next, c_next = (t.permute(0, 1, 4, 2, 3).cpu() for t in (h_next, c_next))
    assert relative_l2(h_next, h_ref) <= TOLERANCE[dtype] and relative_l2(c_next, c_ref) <= TOLERANCE[dtype]


@pytest.mark.gpu
@pytest.mark.parametrize("tile", range(17))
def test_every_channels_last_tile_on_gpu(tile):
    """Each autotuning configuration of the channels-last step launched directly (the autotuner runs only the one
    it picks; the others, GATES_FIRST and TMA ones included, must be right too; 37 × 53 pixels: patches past the
    image's edges)."""
    pytest.importorskip("triton", reason="triton is not installed")
    from cmrvsr_fast.kernels.convlstm_nhwc import _CONFIGS, _TMA_CONFIGS, convlstm_step_nhwc, pack_weights, tma_applies
    from triton.runtime.errors import OutOfResources

    configs = _CONFIGS + _TMA_CONFIGS
    assert len(configs) == 17  # the parametrisation covers every configuration
    if configs[tile].kwargs["TMA"] and torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("the TMA tiles need a Hopper GPU or later")
    # F = 64 (paper-x4) and F = 24: channel chunks and gate columns past F (zero-filled or masked for TMA).
    for features in (64, 24):
        (h, w, gx, c), (h_ref, c_ref) = random_step(2, 3, features, 37, 53, dtype=torch.bfloat16)
        last = lambda t: t.permute(0, 1, 3, 4, 2).contiguous().cuda()  # noqa: E731
        h, w, gx, c = last(h), pack_weights(w.cuda()), last(gx), last(c)
        if configs[tile].kwargs["TMA"]:  # else the tile would quietly run pointer loads
            assert tma_applies(h, w, features, [0, h[0].numel()])
        try:
            h_next, c_next = convlstm_step_nhwc(h, w, gx, c, config=configs[tile])
        except OutOfResources as error:  # e.g. 147 KB of shared memory on a GPU with 100 (sm_86, sm_89)
            if torch.cuda.get_device_capability()[0] >= 9:  # every tile fits a Hopper (tests/test_triton_compile.py)
                raise
            pytest.skip(f"this GPU cannot run the tile: {error}")
        h_next, c_next = (t.permute(0, 1, 4, 2, 3).cpu() for t in (h_next, c_next))
        tolerance = TOLERANCE[torch.bfloat16]
        assert relative_l2(h_next, h_ref) <= tolerance and relative_l2(c_next, c_ref) <= tolerance, features


@pytest.mark.gpu
def test_layer_autotuned_with_the_tma_tiles_on_gpu(monkeypatch):
    """The opt-in autotuned path (CMRVSR_TRITON_TMA=1): the autotuner's grid for patch tiles, the descriptor
    allocator during autotuning, and whichever tile it picks, through a whole layer."""
    pytest.importorskip("triton", reason="triton is not installed")
    if torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("the TMA tiles need a Hopper GPU or later")
    from cmrvsr_fast.kernels import convlstm_nhwc

    monkeypatch.setattr(convlstm_nhwc, "TMA_IN_AUTOTUNING", True)
    inputs = random_layer(4, 3, 64, 37, 53, dtype=torch.bfloat16)
    expected = convlstm_layer_ref(*(t.float() for t in inputs))
    outputs = convlstm_layer(*(t.cuda() for t in inputs), backend="triton")
    for out, ref in zip(outputs, expected, strict=True):
        assert relative_l2(out.float().cpu(), ref) <= TOLERANCE[torch.bfloat16]


def test_layer_reference_is_the_two_directions_stepped_through_the_sequence():
    """convlstm_layer_ref against the model's own cell equations run forward over the frames and backward from
    the last."""
    frames, batch, f, height, width = 4, 2, 6, 5, 7
    gx_fwd, gx_bwd, w = random_layer(frames, batch, f, height, width)
    outputs = convlstm_layer_ref(gx_fwd, gx_bwd, w)
    for out in outputs:  # each frame channels-last, as the Triton op's outputs are
        assert out.reshape(-1, *out.shape[2:]).is_contiguous(memory_format=torch.channels_last)
    for direction, gx, order in ((0, gx_fwd, range(frames)), (1, gx_bwd, range(frames - 1, -1, -1))):
        h = torch.zeros(batch, f, height, width)
        c = torch.zeros(batch, f, height, width)
        for e in order:
            gates = gx[e].float() + torch.nn.functional.conv2d(h, w[direction], padding=1)
            i, fg, o, g = gates.split(f, dim=1)
            c = torch.sigmoid(fg) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            assert relative_l2(outputs[direction][e], h) <= TOLERANCE[torch.float32]
    with pytest.raises(ValueError, match="w has shape"):
        convlstm_layer(gx_fwd, gx_bwd, w[:, :8])
    with pytest.raises(ValueError, match="must both be"):
        convlstm_layer(gx_fwd, gx_bwd[:2], w)


LAYER_INTERPRETED = """
import itertools
import torch
from kernel_helpers import random_layer, record_tma_launches
from tolerances import relative_l2
from cmrvsr_fast.kernels import convlstm_nhwc
from cmrvsr_fast.ops.convlstm import convlstm_layer, convlstm_layer_ref
worst = 0.0
TILES = [(False, 8), (True, 8), (True, 32)]  # (TMA, BLOCK_W) of a 32-pixel tile: pointers, 4 × 8 patch, one row
shapes = [(4, 2, 8, 5, 7), (3, 1, 20, 3, 3), (2, 1, 33, 6, 11), (1, 2, 4, 2, 2), (3, 2, 16, 9, 10), (2, 1, 8, 2, 40)]
launched = record_tma_launches(convlstm_nhwc)
# Each shape with one of the six tile variants, each variant once: the launcher's offsets and ping-pong states do
# not depend on the tile, and the step test runs every variant at every awkward shape.
for (gates_first, (tma, width)), shape in zip(itertools.product((False, True), TILES), shapes, strict=True):
    convlstm_nhwc.INTERPRETER_CONFIG.update(GATES_FIRST=gates_first, TMA=tma, BLOCK_W=width)
    inputs = random_layer(*shape)
    outputs = convlstm_layer(*inputs, backend="triton")
    assert launched[-1] == (tma and shape[2] % 4 == 0), (shape, tma)
    expected = convlstm_layer_ref(*inputs)
    for out, ref in zip(outputs, expected):
        assert out.shape == (shape[0], shape[1], shape[2], *shape[3:])
        worst = max(worst, relative_l2(out, ref))
assert worst <= 1e-5, worst
print("worst", worst)
"""


def test_layer_kernel_under_the_interpreter():
    """The channels-last layer launcher (kernels/convlstm_nhwc.py: per-step offsets into each direction's
    sequence buffers, h(t−1) read from the output it writes, ping-pong cell states) against the reference loop
    at awkward shapes, one frame included."""
    assert "worst" in run_under_triton_interpreter(LAYER_INTERPRETED)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_layer_on_gpu(dtype, backend):
    if backend == "triton":
        pytest.importorskip("triton", reason="triton is not installed")
    inputs = random_layer(5, 3, 64, 37, 53, dtype=dtype)
    expected = convlstm_layer_ref(*(t.float() for t in inputs))
    outputs = convlstm_layer(*(t.cuda() for t in inputs), backend=backend)
    for out, ref in zip(outputs, expected, strict=True):
        assert relative_l2(out.float().cpu(), ref) <= TOLERANCE[dtype]


def test_tma_tiles_apply_only_to_aligned_rows_and_keep_a_users_allocator():
    """The TMA tiles need 16-byte-aligned bases and rows (where not, the step runs the same tile with pointer
    loads: checked by the interpreter tests, which record each launch's path), and the descriptor scratch
    allocator they install never replaces one the process already set."""
    import contextvars

    pytest.importorskip("triton", reason="triton is not installed")
    import triton
    from cmrvsr_fast.kernels import convlstm_nhwc

    _allocation = pytest.importorskip("triton.runtime._allocation", reason="this Triton keeps no allocator record")
    if not hasattr(_allocation._allocator, "get"):
        pytest.skip("this Triton's allocator record is not a ContextVar (before 3.5)")

    h = torch.zeros(2, 3, 5, 7, 64, dtype=torch.bfloat16)
    w = torch.zeros(2, 9, 64, 256, dtype=torch.bfloat16)
    frame = h[0].numel()
    assert convlstm_nhwc.tma_applies(h, w, 64, [0, frame])
    assert not convlstm_nhwc.tma_applies(h, w, 64, [0, frame + 1])  # a base 2 bytes off
    odd = torch.zeros(2, 3, 5, 7, 33, dtype=torch.bfloat16)
    assert not convlstm_nhwc.tma_applies(odd, torch.zeros(2, 9, 33, 132, dtype=torch.bfloat16), 33, [0])

    def install(existing):
        if existing is not None:
            triton.set_allocator(existing)
        convlstm_nhwc._ensure_tma_allocator()
        return _allocation._allocator.get()

    def users_allocator(size, alignment, stream):
        return torch.empty(size, dtype=torch.int8)

    # Fresh contexts: whatever this pytest process set before cannot leak in.
    assert contextvars.Context().run(install, None) is convlstm_nhwc._tma_scratch
    assert contextvars.Context().run(install, users_allocator) is users_allocator


def test_the_tma_autotuning_times_only_rows_that_fit_the_image_and_the_switch_is_restored():
    """A TMA row tile wider than the image would compute mostly padding: the autotuner's prune leaves it out (at
    64 pixels the 128-pixel rows; at 12 every row tile, the 16-wide patches staying); the pointer tiles always
    stay. `tma_tiles_in_autotuning` switches the TMA tiles on for a block and restores the process's setting."""
    pytest.importorskip("triton", reason="triton is not installed")
    from cmrvsr_fast.kernels import convlstm_nhwc

    configs = convlstm_nhwc._CONFIGS + convlstm_nhwc._TMA_CONFIGS

    def kept(width: int) -> list[tuple[int, int]]:
        pruned = convlstm_nhwc._tma_tiles_that_fit(configs, {"W": width, "H": 9})
        assert all(c in pruned for c in convlstm_nhwc._CONFIGS)
        return sorted({(c.kwargs["BLOCK_P"], c.kwargs["BLOCK_W"]) for c in pruned if c.kwargs["TMA"]})

    assert kept(128) == [(64, 16), (64, 64), (128, 16), (128, 128)]
    assert kept(64) == kept(53) == [(64, 16), (64, 64), (128, 16)]
    assert kept(12) == [(64, 16), (128, 16)]

    before = convlstm_nhwc.TMA_IN_AUTOTUNING
    with convlstm_nhwc.tma_tiles_in_autotuning():
        assert convlstm_nhwc.TMA_IN_AUTOTUNING
        with convlstm_nhwc.tma_tiles_in_autotuning(False):
            assert not convlstm_nhwc.TMA_IN_AUTOTUNING
        assert convlstm_nhwc.TMA_IN_AUTOTUNING
    restored = convlstm_nhwc.TMA_IN_AUTOTUNING
    assert restored == before
