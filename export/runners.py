"""Runners for exported artifacts, each a NetworkRunner (cmrvsr_fast.inference.runner) like the Engine's, so an
Upscaler runs an artifact as it runs a checkpoint, and `load_runner`, which picks one by the file's suffix. Every
runner verifies the artifact against its manifest before it hands a byte of it to onnxruntime, TensorRT or
AOTInductor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from cmrvsr_fast.model.checkpoint import ModelCard

from .manifest import ArtifactRefused, Manifest, card_from_manifest, verify


class ShapeMismatch(ValueError):
    """A cine whose frames, size or batch differ from the static shapes an artifact was exported for."""


def _check_shape(manifest: Manifest, lr: Tensor, source: str) -> None:
    _, frames, _, height, width = lr.shape
    if (frames, height, width) != (manifest.frames, manifest.height, manifest.width):
        raise ShapeMismatch(
            f"{source} was exported for T×H×W = {manifest.frames}×{manifest.height}×{manifest.width} LR; this cine "
            f"is {frames}×{height}×{width} (export another artifact for it, or use the .safetensors weights)"
        )
    if manifest.batch is not None and lr.shape[0] != manifest.batch:
        raise ShapeMismatch(f"{source} was exported for batch {manifest.batch}; got {lr.shape[0]}")


class _Runner:
    """The NetworkRunner side every artifact shares: the card and precision its manifest records, the static
    shapes it checks, and batches cut to the exported batch size. `device` is where the caller's tensors live;
    each runner moves them to its own runtime and back."""

    # No memory budget and no working-set estimate: an artifact takes one fixed input size, never tiles.
    memory_budget_mb = None

    def __init__(self, path: str | Path, kind: str, device: str | torch.device = "cpu") -> None:
        self.path = Path(path)
        self.manifest = verify(self.path, kind)
        self.max_batch = self.manifest.batch
        self.device = torch.device(device)
        self.card: ModelCard = card_from_manifest(self.manifest)
        self.precision = self.manifest.precision

    @property
    def backend(self) -> str:
        """The runner's class name, as the job's records (and the derived UIDs) have always named it."""
        return type(self).__name__

    def cines_per_pass(self, frames: int, height: int, width: int, cines: int) -> int:
        return cines  # all at once: __call__ cuts them to the exported batch size itself

    def working_set_bytes(self, frames: int, height: int, width: int) -> int | None:
        return None

    def __call__(self, lr: Tensor, phase: Tensor, stages: int | None = None) -> Tensor:
        stages_exported = int(self.manifest.config["stages"])
        if stages not in (None, stages_exported):
            raise ShapeMismatch(f"{self.path} runs {stages_exported} stages; asked for {stages}")
        _check_shape(self.manifest, lr, str(self.path))
        if self.max_batch is None:
            return self.run(lr.float(), phase.float())
        return torch.cat([self.run(lr[i : i + self.max_batch].float(), phase[i : i + self.max_batch].float())
                          for i in range(0, lr.shape[0], self.max_batch)])  # fmt: skip

    def run(self, lr: Tensor, phase: Tensor) -> Tensor:
        raise NotImplementedError


class OnnxRunner(_Runner):
    """onnxruntime, CUDA execution provider first where it is available."""

    def __init__(
        self, path: str | Path, device: str | torch.device = "cpu", providers: list[str] | None = None
    ) -> None:
        super().__init__(path, "onnx", device)
        import onnxruntime as ort

        available = ort.get_available_providers()
        wanted = providers or ["CUDAExecutionProvider", "CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(self.path), providers=[p for p in wanted if p in available])

    def run(self, lr: Tensor, phase: Tensor) -> Tensor:
        (sr,) = self.session.run(["sr"], {"lr": lr.cpu().numpy(), "phase": phase.cpu().numpy()})
        return torch.from_numpy(np.asarray(sr)).to(lr.device)


class AotiRunner(_Runner):
    """An AOTInductor package; a CUDA package refuses to load on a GPU of another compute capability."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu") -> None:
        super().__init__(path, "aoti", device)
        device = self.manifest.device
        if device.get("type") == "cuda":
            if not torch.cuda.is_available():
                raise ArtifactRefused(f"{self.path}: a CUDA package ({device.get('name')}), and no GPU is visible")
            props = torch.cuda.get_device_properties(torch.cuda.current_device())
            if f"{props.major}.{props.minor}" != device.get("compute_capability"):
                raise ArtifactRefused(f"{self.path}: built for compute capability {device.get('compute_capability')}"
                                      f", this GPU is {props.major}.{props.minor}")  # fmt: skip
        if self.manifest.versions.get("torch") != torch.__version__:
            built = self.manifest.versions.get("torch")
            raise ArtifactRefused(
                f"{self.path}: packaged by torch {built}; this is torch {torch.__version__} "
                "(an AOTI package is tied to the torch that built it)"
            )
        self.package_device = torch.device(device.get("type", "cpu"))
        self.package = torch._inductor.aoti_load_package(str(self.path))

    def run(self, lr: Tensor, phase: Tensor) -> Tensor:
        out = self.package(lr.to(self.package_device), phase.to(self.package_device))
        return (out[0] if isinstance(out, (list, tuple)) else out).to(lr.device)


class TensorRTRunner(_Runner):
    """A TensorRT engine, refused unless its manifest's TensorRT version and GPU match this machine (unless it
    was built version- or hardware-compatible). Runs on the current CUDA stream, replayed through one CUDA graph
    per input shape."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu") -> None:
        super().__init__(path, "tensorrt", device)
        from .optional_tensorrt import require_tensorrt, trt

        require_tensorrt()
        facts, version = self.manifest.device, self.manifest.versions.get("tensorrt")
        if version != trt.__version__ and not facts.get("version_compatible"):
            raise ArtifactRefused(f"{self.path}: built with TensorRT {version}; this is {trt.__version__}")
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        capability = f"{props.major}.{props.minor}"
        if capability != facts.get("compute_capability") and not facts.get("hardware_compatible"):
            built = f"{facts.get('name')} (compute capability {facts.get('compute_capability')})"
            raise ArtifactRefused(f"{self.path}: built on {built}; this GPU is {props.name} ({capability})")
        self.max_batch = self.manifest.batch or facts.get("max_batch")
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise ArtifactRefused(f"{self.path}: TensorRT could not deserialise it")
        self.context = self.engine.create_execution_context()
        self.graphs: dict[tuple, tuple] = {}

    def run(self, lr: Tensor, phase: Tensor) -> Tensor:
        key = tuple(lr.shape)
        if key not in self.graphs:
            self.graphs[key] = self._capture(lr.shape, phase.shape)
        graph, static_lr, static_phase, static_sr = self.graphs[key]
        static_lr.copy_(lr)
        static_phase.copy_(phase)
        graph.replay()
        return static_sr.clone()

    def _capture(self, lr_shape, phase_shape):
        device = torch.device("cuda", torch.cuda.current_device())
        static_lr = torch.zeros(lr_shape, device=device)
        static_phase = torch.zeros(phase_shape, device=device)
        scale = int(self.manifest.config["scale"])
        b, t, _, h, w = lr_shape
        static_sr = torch.empty(b, t, 1, h * scale, w * scale, device=device)
        self.context.set_input_shape("lr", tuple(lr_shape))
        self.context.set_input_shape("phase", tuple(phase_shape))
        for name, tensor in (("lr", static_lr), ("phase", static_phase), ("sr", static_sr)):
            self.context.set_tensor_address(name, tensor.data_ptr())
        stream = torch.cuda.Stream()
        with torch.cuda.stream(stream):
            self.context.execute_async_v3(stream.cuda_stream)  # TensorRT needs one run before capture
        stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            self.context.execute_async_v3(stream.cuda_stream)
        return graph, static_lr, static_phase, static_sr


RUNNERS = {".onnx": OnnxRunner, ".pt2": AotiRunner, ".engine": TensorRTRunner, ".plan": TensorRTRunner}


def load_runner(path: str | Path, device: str | torch.device = "cpu") -> _Runner:
    """The runner for an exported artifact, by its suffix; `device`: where its callers' tensors live."""
    suffix = Path(path).suffix
    if suffix not in RUNNERS:
        raise ArtifactRefused(f"{path}: not an exported artifact (.onnx, .engine, .pt2)")
    return RUNNERS[suffix](path, device)
