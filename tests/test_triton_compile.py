"""The Triton kernels compile for the GPUs the product targets, with no GPU: Triton's compiler runs ahead of time
here for sm_90 (H100/H200) and sm_80 (A100), with the arguments specialised as the JIT specialises paper-x4's.
On Hopper each configuration must fit the shared memory and run its K loop software-pipelined into wgmma
tensor-core instructions; on Ampere the first (smallest) configuration of each tensor-core kernel compiles to
mma.sync (larger ones may exceed sm_80's shared memory: Triton's autotuner skips those there). The interpreter
tests check the arithmetic; this checks what only a GPU build would otherwise show (a configuration that cannot
compile or launch, a missing tensor-core path)."""

from __future__ import annotations

import pytest

triton = pytest.importorskip("triton", reason="triton is not installed")

import re  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402

from cmrvsr_fast.kernels import convlstm_nhwc, phase_fusion_nhwc  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

SHARED_MEMORY = {90: 232448, 80: 166912}  # bytes per block, opt-in maximum (CUDA programming guide)


def signature(kernel, pointers: dict[str, str], constexprs: dict) -> dict[str, str]:
    """Every argument's type: the named pointer types, int32 for the other run-time scalars."""
    return {name: pointers.get(name, "constexpr" if name in constexprs else "i32") for name in kernel.arg_names}


def nhwc_case(dtype: str, ieee: bool, first: bool) -> tuple:
    names = ("h0_ptr", "h1_ptr", "w_ptr", "gx0_ptr", "gx1_ptr", "out0_ptr", "out1_ptr")
    pointers = {name: f"*{dtype}" for name in names} | {"c_ptr": "*fp32", "c_out_ptr": "*fp32"}
    pointers |= {"gx_off0": "i64", "gx_off1": "i64"}  # long stacks at 128² pass 2³¹ (Triton passes int64 then)
    return convlstm_nhwc._step_kernel, pointers, {"FIRST": first, "FP32_IEEE": ieee}


def fusion_nhwc_case(dtype: str, ieee: bool, projection: bool = False) -> tuple:
    """The channels-last fusion as the Engine calls it on a GPU (its channel counts compile-time constants): the
    fusion, 2F = 128 → 136 aligned frame channels with the phase term, or the projection, 136 → 64 without it."""
    pointers = {name: f"*{dtype}" for name in ("x_ptr", "w_ptr", "residual_ptr", "out_ptr")}
    pointers |= {"frame_ptr": "*i32", "bias_ptr": "*fp32", "codes_ptr": "*fp32", "maps_ptr": "*fp32"}
    switches = {"HAS_PHASE": not projection, "HAS_RESIDUAL": False, "FP32_IEEE": ieee}
    channels = {"C": 136, "OUT_CH": 64} if projection else {"C": 128, "OUT_CH": 136}
    return phase_fusion_nhwc._window_conv_nhwc_kernel, pointers, {**switches, **channels}


def largest(configs: list) -> list:
    """The configuration with the most shared memory (its pipelined operand tiles: pixels × K and K × outputs,
    × stages): where a limit is hit first."""

    def size(config) -> int:
        blocks = config.kwargs
        outputs = 4 * blocks["BLOCK_F"] if "BLOCK_F" in blocks else blocks["BLOCK_O"]  # the step: four gates
        return config.num_stages * blocks["BLOCK_K"] * (blocks["BLOCK_P"] + outputs)

    return [max(configs, key=size)]


def cases():
    """(kernel, pointer types, constexpr switches, configurations) for each dtype path the ops take: every bf16
    configuration (the product's path), the largest one of the others (compiling takes ~2 s each)."""
    for dtype, kind in (("bf16", ""), ("fp16", ""), ("fp32", "TF32_"), ("fp32", "IEEE_")):
        ieee = kind == "IEEE_"
        pick = (lambda configs: configs) if dtype == "bf16" else largest
        suffix = {"": "", "TF32_": "-tf32", "IEEE_": "-ieee"}[kind]
        yield f"nhwc-{dtype}{suffix}", *nhwc_case(dtype, ieee, False), pick(getattr(convlstm_nhwc, f"_{kind}CONFIGS"))
        # TF32 fits the fusion's tiles: one table for 16-bit and TF32.
        nhwc_fusion_configs = phase_fusion_nhwc._IEEE_CONFIGS if ieee else phase_fusion_nhwc._CONFIGS
        yield f"fusion-nhwc-{dtype}{suffix}", *fusion_nhwc_case(dtype, ieee), pick(nhwc_fusion_configs)
    yield "projection-nhwc-bf16", *fusion_nhwc_case("bf16", False, projection=True), phase_fusion_nhwc._CONFIGS
    yield "nhwc-first-bf16", *nhwc_case("bf16", False, True), largest(convlstm_nhwc._CONFIGS)
    yield "nhwc-tma-bf16", *nhwc_case("bf16", False, False), convlstm_nhwc._TMA_CONFIGS


CASES = list(cases())


# Run-time integers that are not multiples of 16 in the paper-x4 calls (10 cines; 129 or 645 fusion outputs; a
# window of 5). Every other argument is specialised as the JIT does for such values: pointers 16-byte aligned,
# integers divisible by 16 — which is what lets Triton vectorise and software-pipeline the loads (without it the
# compiled kernels neither pipeline nor use the shared memory they will use on the GPU).
NOT_DIVISIBLE_BY_16 = {"B", "OUT_CH", "WINDOW"}


def compile_for(arch: int, kernel, pointers: dict, switches: dict, config) -> object:
    constexprs = {**switches, **config.kwargs}
    types = signature(kernel, pointers, constexprs)
    attrs = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(kernel.arg_names)
             if types[name] != "constexpr" and name not in NOT_DIVISIBLE_BY_16}  # fmt: skip
    source = ASTSource(fn=kernel, signature=types, constexprs=constexprs, attrs=attrs)
    options = {"num_warps": config.num_warps, "num_stages": config.num_stages}
    try:
        return triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
    except RuntimeError as error:  # no ptxas: Triton's wheel ships one, a source build may not
        if "ptxas" in str(error).lower() and "not found" in str(error).lower():
            pytest.skip(f"Triton cannot compile for CUDA here: {error}")
        raise


def ptxas_report(compiled, arch: int) -> tuple[int, int, bool]:
    """(registers per thread, bytes of spill stores, whether ptxas serialised the wgmma pipeline — its C7513
    performance warning) for the kernel's PTX, ptxas run as Triton 3.9 runs it (its own ptxas, its
    register-allocation option): Triton keeps none of this without a GPU."""
    from triton.backends.nvidia.compiler import get_ptxas

    try:  # Triton 3.5+: a ptxas per architecture family
        ptxas = get_ptxas(arch)
    except TypeError:  # earlier: one ptxas
        ptxas = get_ptxas()
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as source:
        source.write(compiled.asm["ptx"])
        source.flush()
        command = [ptxas.path, "-v", "--regAllocOptLevel=2", f"--gpu-name=sm_{arch}a", source.name, "-o",
                   "/dev/null"]  # fmt: skip
        log = subprocess.run(command, capture_output=True, text=True, check=True).stderr
    registers = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores", log)
    assert registers and spills, log
    return int(registers.group(1)), int(spills.group(1)), "C7513" in log


# The kernels the Engine runs (the layer op's channels-last step, the window fusion) in the product's dtype.
NO_SPILLS = {"nhwc-bf16", "nhwc-first-bf16", "nhwc-tma-bf16", "fusion-nhwc-bf16", "projection-nhwc-bf16"}


@pytest.mark.parametrize(("name", "kernel", "pointers", "switches", "configs"), CASES, ids=[c[0] for c in CASES])
def test_every_autotuning_configuration_compiles_for_hopper(name, kernel, pointers, switches, configs):
    for config in configs:
        compiled = compile_for(90, kernel, pointers, switches, config)
        shared = compiled.metadata.shared
        # A configuration over the limit only costs autotuning time (Triton skips it), but it is a mistake here:
        # a TF32 tile over it would spend autotuning's compile time for nothing; the tables keep under it.
        assert shared <= SHARED_MEMORY[90], f"{name} {config}: {shared} bytes of shared memory"
        ptx = compiled.asm["ptx"]
        if not switches["FP32_IEEE"] and not switches.get("FIRST"):
            assert "wgmma.mma_async" in ptx, f"{name} {config}: no Hopper tensor-core instruction in the PTX"
            # Software-pipelined: the K loop's loads are asynchronous copies into shared memory (by the TMA unit
            # for the TMA tiles: bulk tensor copies).
            copy = "async_tma_copy_global_to_local" if config.kwargs.get("TMA") else "async_copy_global_to_local"
            assert copy in compiled.asm["ttgir"], f"{name} {config}: loads not pipelined"
            if config.kwargs.get("TMA"):
                assert "cp.async.bulk.tensor" in ptx, f"{name} {config}: no TMA copy in the PTX"
        if name in NO_SPILLS:  # a spill in the hot loop costs local-memory traffic on every K step
            registers, spilled, serialized = ptxas_report(compiled, 90)
            assert spilled == 0, f"{name} {config}: {registers} registers, {spilled} bytes of spill stores"
            # The pointer tiles and the TMA rows feed wgmma from shared memory, and ptxas keeps its pipeline
            # asynchronous. (The TMA patches do not: Triton reads their (1, rows, 16, K) box into registers for
            # the dot, and under Triton 3.9 ptxas serialises the wgmma instructions — C7513.)
            if not config.kwargs.get("TMA") or is_row(config):
                assert not serialized, f"{name} {config}: ptxas serialised the wgmma pipeline (C7513)"
                if "wgmma.mma_async" in ptx:
                    assert dots_read_shared_memory(compiled), f"{name} {config}: a dot operand through registers"


def is_row(config) -> bool:
    """A TMA tile whose patch is one image row (box (1, 1, P, K))."""
    return config.kwargs.get("TMA") and config.kwargs["BLOCK_W"] == config.kwargs["BLOCK_P"]


def dots_read_shared_memory(compiled) -> bool:
    """Whether every Hopper dot of the kernel takes both operands from shared memory (the TTGIR's operand types
    after the dot's attributes, `: !ttg.memdesc<...> * !ttg.memdesc<...> -> ...`), not the A tile from registers."""
    dots = [line for line in compiled.asm["ttgir"].splitlines() if "warp_group_dot " in line]
    operands = [line.split("} : ", 1)[1].split(" -> ")[0] for line in dots]
    return bool(dots) and all(o.startswith("!ttg.memdesc") and " * !ttg.memdesc" in o for o in operands)


@pytest.mark.parametrize("name", ["nhwc-bf16", "fusion-nhwc-bf16"])
def test_the_tensor_core_kernels_compile_for_ampere(name):
    _, kernel, pointers, switches, configs = next(c for c in CASES if c[0] == name)
    compiled = compile_for(80, kernel, pointers, switches, configs[0])
    assert compiled.metadata.shared <= SHARED_MEMORY[80]
    assert "mma.sync" in compiled.asm["ptx"]
