"""The Engine's CPU schedule (inference/stepwise.py): when it runs, its in-place cell, and its buffers (kept per
thread for the last input shape, sized as the memory budget assumes). Its parity with the reference is in
test_engine.py, beside the hoisted schedule's."""

from __future__ import annotations

import threading

import pytest
import torch
from conftest import make_inputs, make_model
from tolerances import RELATIVE_L2, relative_l2

from cmrvsr_fast import ModelConfig
from cmrvsr_fast.inference import stepwise
from cmrvsr_fast.inference.engine import Engine
from cmrvsr_fast.ops.convlstm import lstm_cell, lstm_cell_


def test_auto_runs_stepwise_on_the_cpu_and_hoisted_where_something_asks_for_it(tiny_config: ModelConfig) -> None:
    model = make_model(tiny_config).eval()
    assert Engine(model).schedule == "stepwise"
    assert Engine(model, compile=True).schedule == "hoisted"  # the compiled pieces are the hoisted schedule's
    assert Engine(model, schedule="hoisted").schedule == "hoisted"
    with pytest.raises(ValueError, match="stepwise schedule runs PyTorch ops eagerly"):
        Engine(model, schedule="stepwise", compile=True)
    with pytest.raises(ValueError, match="schedule must be one of"):
        Engine(model, schedule="fastest")


def test_the_in_place_cell_is_the_cell() -> None:
    gates = torch.randn(2, 4 * 5, 3, 4).contiguous(memory_format=torch.channels_last)
    c = torch.randn(2, 5, 3, 4).contiguous(memory_format=torch.channels_last)
    h_ref, c_ref = lstm_cell(gates, c)
    h_out = torch.empty(2, 5, 3, 4, dtype=torch.bfloat16)
    c_inplace = c.clone()
    lstm_cell_(gates.clone(), c_inplace, h_out, torch.empty_like(c))
    torch.testing.assert_close(c_inplace, c_ref)
    torch.testing.assert_close(h_out, h_ref.to(torch.bfloat16))


def test_buffers_are_reused_for_a_shape_and_replaced_for_another(tiny_config: ModelConfig) -> None:
    model = make_model(tiny_config).eval()
    engine = Engine(model)
    lr, phase = make_inputs(1, 5, 6, 7)

    def held() -> stepwise.Workspace:
        return engine._workspaces._local.held[1]

    engine(lr, phase)
    first = held()
    engine(lr, phase)
    assert held() is first
    engine(lr[..., :5, :5], phase)
    assert held() is not first and held().phase.shape[-2:] == (5, 5)
    engine.release_workspace()
    assert engine._workspaces._local.held is None


def test_threads_sharing_an_engine_keep_their_own_buffers(tiny_config: ModelConfig) -> None:
    """The DICOM node's workers share one Upscaler: concurrent passes must not write into each other's buffers."""
    model = make_model(tiny_config).eval()
    engine = Engine(model)
    torch.manual_seed(0)
    inputs = [make_inputs(1, 6, 8, 8) for _ in range(3)]
    alone = [engine(lr, phase) for lr, phase in inputs]
    together: dict[int, torch.Tensor] = {}
    barrier = threading.Barrier(len(inputs))

    def run(index: int) -> None:
        barrier.wait()
        for _ in range(3):
            together[index] = engine(*inputs[index])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, expected in enumerate(alone):
        assert torch.equal(together[index], expected)


@pytest.mark.parametrize(
    ("dtype", "winograd"),
    [(torch.float32, False), (torch.bfloat16, False), (torch.float32, True)],
    ids=["fp32", "bf16", "fp32-winograd"],
)
def test_the_workspace_takes_what_it_says(dtype: torch.dtype, winograd: bool) -> None:
    shape = (9, 2, 6, 5, 7, 5, dtype)  # frames, batch, features, height, width, window, dtype
    workspace = stepwise.Workspace.allocate(*shape, winograd=winograd)
    tensors = [*workspace.slots_fwd, *workspace.slots_bwd, *workspace.cells, workspace.gates, workspace.scratch,
               workspace.frames, workspace.window, workspace.phase, workspace.fused, workspace.transformed,
               workspace.products, workspace.transformed_frames, workspace.fused_products]  # fmt: skip
    held = sum(t.untyped_storage().nbytes() for t in tensors if t is not None)
    assert held == stepwise.Workspace.nbytes(*shape, winograd=winograd)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_the_memory_budget_counts_the_stepwise_buffers(dtype: torch.dtype) -> None:
    """The estimate the memory budget divides is at least what a pass holds: the workspace (in float32 with
    Winograd's transformed tiles, where it runs) besides the features, the refine maps and the output."""
    config = ModelConfig.from_name("paper-x4")
    engine = Engine(make_model(config).eval(), dtype=dtype)
    frames, height, width = 30, 64, 64
    workspace = stepwise.Workspace.nbytes(frames + 2 * config.warmup, 1, config.features, height, width,
                                          config.window, dtype, engine.convolution == "winograd")  # fmt: skip
    assert engine.working_set_bytes(frames, height, width) > workspace


def test_a_stepwise_pass_of_one_cine_matches_a_pass_of_several(tiny_config: ModelConfig) -> None:
    model = make_model(tiny_config).eval()
    lr, phase = make_inputs(3, 5, 6, 6)
    for dtype in (torch.float32, torch.bfloat16):
        one_by_one = Engine(model, dtype=dtype, max_batch=1)(lr, phase)
        together = Engine(model, dtype=dtype)(lr, phase)
        assert relative_l2(one_by_one, together) <= RELATIVE_L2[dtype]
