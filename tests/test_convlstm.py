"""The fused ConvLSTM step: Triton (under TRITON_INTERPRET=1 on the CPU) and the reference twin against the cells
of the reference model, at awkward shapes; dispatch rules. GPU parity is in the gpu-marked test."""

from __future__ import annotations

import pytest
import torch
from conftest import run_under_triton_interpreter
from tolerances import RELATIVE_L2 as TOLERANCE
from tolerances import TF32_RELATIVE_L2, relative_l2

from cmrvsr_fast.model.network import ConvLSTMCell
from cmrvsr_fast.ops.backends import resolve_backend
from cmrvsr_fast.ops.convlstm import convlstm_layer, convlstm_layer_ref, convlstm_step, convlstm_step_ref


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


@pytest.mark.parametrize("shape", [(2, 1, 8, 5, 7), (2, 2, 16, 9, 4), (1, 1, 20, 3, 3), (2, 1, 33, 6, 11)])
def test_reference_twin_matches_the_cells(shape):
    inputs, (h_ref, c_ref) = random_step(*shape)
    h, c = convlstm_step_ref(*inputs)
    assert relative_l2(h, h_ref) <= TOLERANCE[torch.float32] and relative_l2(c, c_ref) <= TOLERANCE[torch.float32]
    assert c.dtype == torch.float32


def test_dispatch_rules(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert resolve_backend("auto", torch.device("cpu")) == "reference"
    with pytest.raises(RuntimeError, match="backend 'triton' was asked for"):
        resolve_backend("triton", torch.device("cpu"))
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("cuda-graphs", torch.device("cpu"))
    with pytest.raises(RuntimeError, match="backend 'cuda' was asked for, but the CUDA extension runs on CUDA"):
        resolve_backend("cuda", torch.device("cpu"), cuda_twin=True)
    with pytest.raises(RuntimeError, match="has no CUDA C\\+\\+ kernel yet"):
        resolve_backend("cuda", torch.device("cpu"), "window_conv3x3")
    inputs, _ = random_step(2, 1, 8, 4, 4)
    with pytest.raises(ValueError, match="cell state must be float32"):
        convlstm_step(*inputs[:3], inputs[3].double())
    with pytest.raises(ValueError, match="gx has shape"):
        convlstm_step(inputs[0], inputs[1], inputs[2][:, :, :8], inputs[3])


INTERPRETED = """
import torch
from test_convlstm import random_step, relative_l2, TOLERANCE
from cmrvsr_fast.ops.convlstm import convlstm_step
worst = 0.0
for shape in [(2, 1, 8, 5, 7), (2, 2, 16, 9, 4), (1, 1, 20, 3, 3), (2, 1, 33, 6, 11)]:
    inputs, (h_ref, c_ref) = random_step(*shape)
    h, c = convlstm_step(*inputs, backend="triton")
    worst = max(worst, relative_l2(h, h_ref), relative_l2(c, c_ref))
assert worst <= TOLERANCE[torch.float32], worst

# The Engine with the fused step against the reference model, at an awkward shape (n > T wraps, odd sizes).
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
print("worst", worst, "engine", engine_error)
"""


def test_triton_kernel_under_the_interpreter():
    assert "worst" in run_under_triton_interpreter(INTERPRETED)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_kernels_on_gpu(dtype, backend):
    if backend == "triton":
        pytest.importorskip("triton", reason="triton is not installed")
    inputs, (h_ref, c_ref) = random_step(2, 3, 64, 37, 53, dtype=dtype)
    h, c = convlstm_step(*(t.cuda() for t in inputs), backend=backend)
    assert relative_l2(h.cpu(), h_ref) <= TOLERANCE[dtype] and relative_l2(c.cpu(), c_ref) <= TOLERANCE[dtype]


@pytest.mark.gpu
def test_triton_float32_follows_pytorchs_tf32_switch():
    """With cuDNN's TF32 switch on (PyTorch's default) the fp32 Triton step runs on the tensor cores, as the
    reference's convolutions do: a TF32-sized error, not an IEEE one; off (every other test), IEEE float32."""
    pytest.importorskip("triton", reason="triton is not installed")
    inputs, (h_ref, _) = random_step(2, 3, 64, 37, 53)
    torch.backends.cudnn.allow_tf32 = True  # the autouse fixture restores it
    h, _ = convlstm_step(*(t.cuda() for t in inputs), backend="triton")
    assert 1e-6 < relative_l2(h.cpu(), h_ref) <= TF32_RELATIVE_L2


def test_float32_is_ieee_on_the_cpu_whatever_the_tf32_switch():
    from cmrvsr_fast.kernels.conv_tiles import ieee_float32

    torch.backends.cudnn.allow_tf32 = True  # the autouse fixture restores it
    assert ieee_float32(torch.zeros(1)) and not ieee_float32(torch.zeros(1, dtype=torch.bfloat16))


NHWC_INTERPRETED = """
import itertools
import torch
from test_convlstm import random_step, record_tma_launches
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


def test_channels_last_variant_under_the_interpreter():
    """The channels-last step (kernels/convlstm_nhwc.py, the layer op's kernel, timed beside the NCHW one by the
    device check) computes the same step at awkward shapes."""
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
from test_convlstm import random_layer, record_tma_launches
from tolerances import relative_l2
from cmrvsr_fast.kernels import convlstm_nhwc
from cmrvsr_fast.ops.convlstm import convlstm_layer, convlstm_layer_ref
worst = 0.0
TILES = [(False, 8), (True, 8), (True, 32)]  # (TMA, BLOCK_W) of a 32-pixel tile: pointers, 4 × 8 patch, one row
shapes = [(4, 2, 8, 5, 7), (3, 1, 20, 3, 3), (2, 1, 33, 6, 11), (1, 2, 4, 2, 2), (3, 2, 16, 9, 10), (2, 1, 8, 2, 40)]
launched = record_tma_launches(convlstm_nhwc)
for gates_first, (tma, width), shape in itertools.product((False, True), TILES, shapes):
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
