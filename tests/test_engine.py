"""The fast inference schedule against the reference model (tolerances from tests/tolerances.py)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_inputs, make_model, run_under_triton_interpreter
from tolerances import RELATIVE_L2, relative_l2

import cmrvsr_fast
from cmrvsr_fast import ModelConfig
from cmrvsr_fast.data import degrade, generate
from cmrvsr_fast.evaluation.evaluate import super_resolve
from cmrvsr_fast.evaluation.metrics import cardiac_psnr, to_grey_levels
from cmrvsr_fast.inference.engine import Engine

CASES = [
    (ModelConfig(scale=3, features=5, lstm_layers=2, warmup=3, stages=3), (2, 7, 5, 6)),
    (ModelConfig(scale=4, features=6, lstm_layers=2, warmup=1, stages=2), (1, 4, 4, 3)),  # n < N
    (ModelConfig(scale=2, features=4, lstm_layers=1, warmup=0, stages=1), (1, 1, 3, 3)),  # T = 1, n = 0
    (ModelConfig(scale=4, features=4, lstm_layers=3, warmup=6, stages=3), (10, 2, 3, 5)),  # n > T, batch 10
    (ModelConfig.from_name("paper-x4"), (1, 7, 7, 9)),
    (ModelConfig.from_name("paper-x3"), (1, 2, 5, 3)),
]


@pytest.mark.parametrize(("config", "shape"), CASES, ids=[f"case{i}" for i in range(len(CASES))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize(("schedule", "convolution"), [("hoisted", "direct"), ("stepwise", "direct"),
                                                       ("stepwise", "auto")])  # fmt: skip
def test_engine_matches_the_reference(config: ModelConfig, shape, dtype: torch.dtype, schedule: str,
                                      convolution: str) -> None:  # fmt: skip
    """convolution "auto": Winograd in float32 (test_winograd.py checks that it is built), direct in bf16."""
    model = make_model(config).eval()
    lr, phase = make_inputs(shape[0], shape[1], shape[2], shape[3])
    with torch.no_grad():
        reference = model(lr, phase)
    engine = Engine(model, dtype=dtype, schedule=schedule, convolution=convolution)
    out = engine(lr, phase)
    assert out.shape == reference.shape and out.dtype == torch.float32
    assert relative_l2(out, reference) <= RELATIVE_L2[dtype]
    assert torch.equal(engine(lr, phase), out)  # a second call, on the buffers the first one left, computes the same


def test_aligned_frame_channels_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU the window op's weights pad the 2F + 1 frame channels with zero weights to a multiple of 8; forced
    on here (paper-x4's 129 → 136, and an odd config with warm-up < half the window): the padding weights and maps
    are zero, and the result is the unpadded engine's (fp32) and the reference's (bf16). The padding is the hoisted
    schedule's (the GPU's), which these engines therefore name."""
    for config, shape in (CASES[4], CASES[1]):
        model = make_model(config).eval()
        lr, phase = make_inputs(*shape)
        plain = Engine(model, schedule="hoisted")
        with monkeypatch.context() as patch:
            patch.setattr(Engine, "ALIGN_FRAME_CHANNELS_ON", ("cuda", "cpu"))
            aligned = Engine(model, schedule="hoisted")
            aligned_bf16 = Engine(model, dtype=torch.bfloat16, schedule="hoisted")
        frame, pad = config.frame_channels, aligned.frame_pad
        assert pad == (-frame) % 8 and pad > 0 and plain.frame_pad == 0
        assert aligned.fuse_window_w.shape[1] == frame + pad and not aligned.fuse_window_w[:, frame:].any()
        assert not aligned.fuse_b_aligned[frame:].any() and not aligned.proj_window_w[:, :, frame:].any()
        assert not aligned.window_phase_maps(aligned.phase_maps(*shape[2:]))[:, frame:].any()
        with torch.no_grad():
            assert relative_l2(aligned(lr, phase), plain(lr, phase)) <= 1e-6
            assert relative_l2(aligned_bf16(lr, phase), model(lr, phase)) <= RELATIVE_L2[torch.bfloat16]


def test_the_engines_auto_asks_the_backend_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """backend="auto" is resolved per op by cmrvsr_fast.ops.backends (its table is tested in test_convlstm.py):
    on the CPU PyTorch ops for both, even with the Triton interpreter on."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    engine = Engine(make_model(ModelConfig(scale=2, features=4, lstm_layers=1, warmup=0, stages=1)), backend="auto")
    assert engine.backends == {"convlstm_layer": "torch", "window_conv3x3": "torch"}


@pytest.mark.parametrize("factor", [2, 3])
def test_channels_last_pixel_shuffle_is_pixel_shuffle(factor: int) -> None:
    from cmrvsr_fast.inference.engine import pixel_shuffle_channels_last

    x = torch.randn(2, 5 * factor * factor, 3, 4).contiguous(memory_format=torch.channels_last)
    out = pixel_shuffle_channels_last(x, factor)
    assert torch.equal(out, torch.nn.functional.pixel_shuffle(x, factor))
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_engine_stages_and_chunking(tiny_config: ModelConfig) -> None:
    model = make_model(tiny_config).eval()
    lr, phase = make_inputs(5, 6, 4, 4)
    engine = Engine(model, max_batch=2)
    with torch.no_grad():
        assert relative_l2(engine(lr, phase, stages=1), model(lr, phase, stages=1)) <= 1e-5
    torch.testing.assert_close(engine(lr, phase), Engine(model)(lr, phase), rtol=1e-5, atol=1e-6)


def test_engine_refuses_what_it_cannot_do(tiny_config: ModelConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    model = make_model(tiny_config)
    with pytest.raises(ValueError, match="backend"):
        Engine(model, backend="tensorrt")
    with pytest.raises(RuntimeError, match="backend 'cuda' was asked for"):
        Engine(model, backend="cuda")  # CPU tensors
    with pytest.raises(RuntimeError, match="backend 'triton' was asked for"):
        Engine(model, backend="triton")  # CPU tensors without the interpreter: named, so it raises
    assert Engine(model, backend="auto").backend == "torch"  # auto falls back
    with pytest.raises(ValueError, match="dtype"):
        Engine(model, dtype=torch.float64)
    with pytest.raises(ValueError, match="phase"):
        Engine(model)(torch.zeros(1, 3, 1, 4, 4), torch.zeros(1, 2))


def test_bf16_keeps_the_cardiac_psnr_of_the_embedded_default() -> None:
    upscaler = cmrvsr_fast.load(device="cpu")
    p = generate(3_000_000, (96, 96), 16)
    hr, lr = p.cine[0], degrade(p.cine[0], 4)
    from cmrvsr_fast.cardiac.phase import phase_code

    codes = phase_code(16, 0, p.es)
    reference = super_resolve(upscaler.model, lr, codes, upscaler.card.normalisation)
    engine = Engine(upscaler.model, dtype=torch.bfloat16)
    fast = super_resolve(engine, lr, codes, upscaler.card.normalisation)
    before = cardiac_psnr(to_grey_levels(reference), hr, p.heart_box)
    after = cardiac_psnr(to_grey_levels(fast), hr, p.heart_box)
    assert abs(after - before) <= 0.05


def test_memory_budget_bounds_the_cines_per_pass(tiny_config: ModelConfig) -> None:
    model = make_model(tiny_config)
    lr, phase = make_inputs(5, 4, 6, 7)
    one_pass = Engine(model)
    assert one_pass.cines_per_pass(4, 6, 7, cines=5) == 5  # no budget: the whole stack at once
    need = one_pass.working_set_bytes(4, 6, 7)
    bounded = Engine(model, memory_budget_mb=2.5 * need / 2**20)
    assert bounded.cines_per_pass(4, 6, 7, cines=5) == 2
    assert Engine(model, memory_budget_mb=1e-9).cines_per_pass(4, 6, 7) == 1  # at least one cine
    assert torch.allclose(bounded(lr, phase), one_pass(lr, phase), rtol=1e-5, atol=1e-6)
    # The estimate grows with every dimension and is in the measured range for paper-x4 (2.4 GB peak RSS
    # for one 30-frame 64×64 cine on the CPU, the model and allocator included).
    paper = Engine(cmrvsr_fast.CMRVSR(ModelConfig.from_name("paper-x4")))
    assert 1.0e9 < paper.working_set_bytes(30, 64, 64) < 2.4e9
    assert paper.working_set_bytes(30, 64, 64) < paper.working_set_bytes(31, 64, 64)


def test_cuda_graphs_need_a_cuda_device(tiny_config: ModelConfig) -> None:
    with pytest.raises(ValueError, match="cuda_graph=True needs a CUDA device"):
        Engine(make_model(tiny_config), cuda_graph=True)


def test_cuda_graphs_are_kept_for_the_most_recent_shapes(tiny_config: ModelConfig, monkeypatch) -> None:
    """A job meets many pass shapes: the Engine keeps the graphs (each with its memory pool) of the
    max_cuda_graphs most recently replayed ones. The capture is stubbed here (no GPU): what is checked is which
    shapes are kept and that a replay serves the captured graph's output."""
    engine = Engine(make_model(tiny_config), max_cuda_graphs=2)
    engine.cuda_graph = True  # (the constructor refuses it on a CPU)
    captured = []

    class Graph:
        def __init__(self, out):
            self.out = out

        def replay(self):
            self.out.fill_(float(len(captured)))

    def capture(lr, phase, stages):
        captured.append(tuple(lr.shape))
        out = torch.zeros(lr.shape[0], lr.shape[1], 1, 2, 2)
        return Graph(out), lr.clone(), phase.clone(), out

    monkeypatch.setattr(engine, "_capture", capture)
    for height in (8, 9, 8, 10, 8, 9):
        lr, phase = make_inputs(1, 3, height, 8)
        assert engine(lr, phase).shape == (1, 3, 1, 2, 2)
    shapes = [key[0][3] for key in engine._graphs]
    # 8 and 9 captured; 8 replayed; 10 evicts 9 (the least recently used); 8 replayed; 9 captured again, evicting 10
    assert [shape[3] for shape in captured] == [8, 9, 10, 9] and shapes == [8, 9]
    with pytest.raises(ValueError, match="max_cuda_graphs"):
        Engine(make_model(tiny_config), max_cuda_graphs=0)


def test_cudnn_benchmark_is_on_for_the_engines_convolutions_only(tiny_config: ModelConfig, monkeypatch) -> None:
    """cudnn_benchmark=True: every convolution of the pass sees cuDNN's benchmark mode on, and the caller's
    setting is back afterwards, also when the pass raises; without it the caller's setting is left alone."""
    model = make_model(tiny_config).eval()
    lr, phase = make_inputs(2, 3, 5, 4)
    seen = []
    conv = Engine._conv

    def spy(self, *args, **kwargs):
        seen.append(torch.backends.cudnn.benchmark)
        return conv(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "_conv", spy)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    with torch.no_grad():
        reference = model(lr, phase)
    tuned = Engine(model, cudnn_benchmark=True)
    assert relative_l2(tuned(lr, phase), reference) <= RELATIVE_L2[torch.float32]
    assert seen and all(seen) and torch.backends.cudnn.benchmark is False
    seen.clear()
    Engine(model)(lr, phase)
    assert seen and not any(seen)
    torch.backends.cudnn.benchmark = True  # a caller's own setting is not switched off
    seen.clear()
    Engine(model)(lr, phase)
    assert seen and all(seen)
    torch.backends.cudnn.benchmark = False
    monkeypatch.setattr(tuned, "forward_pass", lambda *args: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        tuned(lr, phase)
    assert torch.backends.cudnn.benchmark is False


@pytest.mark.gpu
def test_cudnn_benchmark_keeps_parity_on_a_gpu() -> None:
    model = make_model(ModelConfig.from_name("paper-x4")).eval().cuda()
    lr, phase = make_inputs(2, 5, 16, 12)
    with torch.no_grad():
        reference = model(lr.cuda(), phase.cuda()).cpu()
    for backend, graph in (("auto", False), ("torch", False), ("auto", True)):  # graph: captured with it off
        engine = Engine(model, dtype=torch.bfloat16, backend=backend, cudnn_benchmark=True, cuda_graph=graph)
        for _ in range(2):  # (under a graph: the capture, then a replay)
            assert relative_l2(engine(lr, phase).cpu(), reference) <= RELATIVE_L2[torch.bfloat16]
        assert torch.backends.cudnn.benchmark is False


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["torch", "triton", "cuda", "auto"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cuda_graph_replays_match_the_reference(backend: str, dtype: torch.dtype) -> None:
    config = ModelConfig.from_name("paper-x4")
    model = make_model(config).eval()
    engine = Engine(model.cuda(), dtype=dtype, backend=backend, cuda_graph=True, max_batch=2)
    for seed in (0, 1):  # the second call replays the graph with new inputs
        torch.manual_seed(seed)
        lr, phase = make_inputs(3, 7, 16, 12)  # chunks of 2 and 1 cines: two graphs
        with torch.no_grad():
            reference = model(lr.cuda(), phase.cuda()).cpu()
        assert relative_l2(engine(lr, phase).cpu(), reference) <= RELATIVE_L2[dtype]
    assert len(engine._graphs) == 2


def test_each_fused_op_takes_its_own_backend(tiny_config: ModelConfig) -> None:
    model = make_model(tiny_config)
    both = Engine(model, backend="torch")
    assert both.backends == {"convlstm_layer": "torch", "window_conv3x3": "torch"} and both.backend == "torch"
    with pytest.raises(ValueError, match="unknown op"):
        Engine(model, backend={"convlstm": "torch"})
    with pytest.raises(ValueError, match="choose one of auto, torch, triton, cuda"):
        Engine(model, backend={"window_conv3x3": "tpu"})
    with pytest.raises(RuntimeError, match="backend 'cuda' was asked for"):
        Engine(model, backend={"convlstm_layer": "cuda"})  # named and unavailable here: raises, as for one name


def test_a_kernel_for_one_op_beside_pytorch_for_the_other_under_the_interpreter() -> None:
    out = run_under_triton_interpreter(MIXED_BACKENDS)
    assert "ok" in out, out


MIXED_BACKENDS = """
import torch
from conftest import make_inputs, make_model, run_under_triton_interpreter
from tolerances import RELATIVE_L2, relative_l2
from cmrvsr_fast import ModelConfig
from cmrvsr_fast.inference.engine import Engine
config = ModelConfig(scale=2, features=8, lstm_layers=1, window=3, warmup=2, stages=2)
model = make_model(config).eval()
lr, phase = make_inputs(1, 4, 6, 5)
with torch.no_grad():
    expected = model(lr, phase)
for backend in ({"convlstm_layer": "triton"}, {"window_conv3x3": "triton"}):
    for compile in (False, True):  # compiled: the PyTorch pieces through torch.compile beside the custom op
        engine = Engine(model, backend=backend, compile=compile)
        assert "torch" in engine.backend and "triton" in engine.backend, engine.backend
        error = relative_l2(engine(lr, phase), expected)
        assert error <= RELATIVE_L2[torch.float32], (backend, compile, error)
# The Triton fusion with the frame channels aligned as on a GPU (17 → 24 here: zero weights, zero maps).
Engine.ALIGN_FRAME_CHANNELS_ON = ("cuda", "cpu")
engine = Engine(model, backend={"window_conv3x3": "triton"})
assert engine.frame_pad == 7 and engine.fuse_window_w.shape[1] == 24
error = relative_l2(engine(lr, phase), expected)
assert error <= RELATIVE_L2[torch.float32], ("aligned", error)
print("ok")
"""
