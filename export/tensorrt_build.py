"""TensorRT engines from the exported ONNX graph (the `tensorrt` extra; needs an NVIDIA GPU).

Precision: with fp16/bf16 the convolutions run in reduced precision, while every pointwise layer on floating
tensors — the gate nonlinearities and the c/h update of each ConvLSTM cell, the residual adds, the phase-fusion
sums — is pinned to float32 (layer precision and output type, OBEY_PRECISION_CONSTRAINTS), so the cell state and
every accumulation the reference does in fp32 stay there. One optimisation profile over the batch (min 1, opt
and max as given) when the ONNX batch is dynamic; a timing cache file makes rebuilds fast; version- and
hardware-compatibility flags are optional. An engine is tied to its TensorRT version and GPU: build it on the
target (for a Jetson Orin, on the Orin itself, README: "Deploying"). The manifest beside it records both.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from cmrvsr_fast.atomic import atomic_write

from .manifest import Manifest, card_from_manifest, verify
from .optional_tensorrt import require_tensorrt, trt

__all__ = ["build_engine", "require_tensorrt"]


def _pin_pointwise_to_fp32(network) -> int:
    pinned = 0
    pointwise = {trt.LayerType.ELEMENTWISE, trt.LayerType.ACTIVATION, trt.LayerType.UNARY}
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        floating = all(layer.get_output(k).dtype == trt.float32 for k in range(layer.num_outputs))
        if layer.type in pointwise and floating:
            layer.precision = trt.float32
            for k in range(layer.num_outputs):
                layer.set_output_type(k, trt.float32)
            pinned += 1
    return pinned


def build_engine(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    precision: str = "fp16",
    max_batch: int = 8,
    opt_batch: int = 1,
    timing_cache: str | os.PathLike[str] | None = None,
    version_compatible: bool = False,
    hardware_compatible: bool = False,
    workspace_gib: int = 8,
) -> Manifest:
    """Build a TensorRT engine from an exported ONNX graph (checked against its manifest first)."""
    require_tensorrt()
    source = verify(onnx_path, "onnx")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT could not parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_gib << 30)
    if precision in ("fp16", "bf16"):
        config.set_flag(trt.BuilderFlag.FP16 if precision == "fp16" else trt.BuilderFlag.BF16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        _pin_pointwise_to_fp32(network)
    elif precision != "fp32":
        raise ValueError(f"precision must be fp32, fp16 or bf16, got {precision!r}")
    if source.batch is None:
        profile = builder.create_optimization_profile()
        for index in range(network.num_inputs):
            tensor = network.get_input(index)
            rest = tuple(tensor.shape)[1:]
            profile.set_shape(tensor.name, (1, *rest), (opt_batch, *rest), (max_batch, *rest))
        config.add_optimization_profile(profile)
    cache_bytes = Path(timing_cache).read_bytes() if timing_cache and Path(timing_cache).is_file() else b""
    config.set_timing_cache(config.create_timing_cache(cache_bytes), ignore_mismatch=False)
    if version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    atomic_write(engine_path, lambda tmp: Path(tmp).write_bytes(bytes(plan)))
    if timing_cache:
        cache = config.get_timing_cache().serialize()
        atomic_write(timing_cache, lambda tmp: Path(tmp).write_bytes(bytes(cache)))
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    manifest = Manifest.describe(
        "tensorrt", engine_path, card_from_manifest(source), precision, (source.frames, source.height, source.width),
        source.batch,
        versions={"tensorrt": trt.__version__, "torch": torch.__version__, "onnx_sha256": source.artifact_sha256},
        device={
            "name": props.name,
            "compute_capability": f"{props.major}.{props.minor}",
            "max_batch": max_batch if source.batch is None else source.batch,
            "version_compatible": version_compatible,
            "hardware_compatible": hardware_compatible,
        },
    )  # fmt: skip
    manifest.write(engine_path)
    return manifest
