"""The manifest beside every exported artifact, and the check that runs before an artifact is deserialised.

`model.onnx` has `model.onnx.manifest.json` beside it: format, sha256 of the artifact (and of an ONNX model's
external data files), sha256 of the source weights, precision, static shapes, the versions that built it and,
for TensorRT engines, the GPU and compute capability they were built for. A runner refuses an artifact whose
manifest is missing, malformed, for another format, or whose hashes or platform do not match — before any byte
of it reaches a deserialiser (a TensorRT plan or an AOTI package is code for the machine that runs it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmrvsr_fast.atomic import atomic_write_text
from cmrvsr_fast.model.checkpoint import ModelCard
from cmrvsr_fast.model.config import ModelConfig

MANIFEST_FORMAT = "cmrvsr_fast.export/1"
SUFFIXES = {"onnx": ".onnx", "tensorrt": ".engine", "aoti": ".pt2"}


class ArtifactRefused(ValueError):
    """An artifact that will not be loaded; the message names the file and the reason."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_path(artifact: str | Path) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".manifest.json")


@dataclass
class Manifest:
    format: str  # onnx | tensorrt | aoti
    artifact_sha256: str
    weights_sha256: str
    precision: str
    frames: int
    height: int
    width: int
    batch: int | None  # None: dynamic
    config: dict[str, Any]  # the model configuration (ModelConfig.to_dict)
    normalisation: tuple[float, float]
    versions: dict[str, str] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)  # TensorRT: name, compute capability
    external_data: dict[str, str] = field(default_factory=dict)  # ONNX: file name -> sha256
    created: str = ""

    def to_json(self) -> str:
        return json.dumps({"manifest": MANIFEST_FORMAT, **dataclasses.asdict(self)}, indent=2, sort_keys=True) + "\n"

    @classmethod
    def read(cls, artifact: str | Path) -> Manifest:
        path = manifest_path(artifact)
        if not path.is_file():
            raise ArtifactRefused(
                f"{artifact}: no manifest {path.name} beside it; refusing an artifact of unknown origin"
            )
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
            if body.pop("manifest", None) != MANIFEST_FORMAT:
                raise ValueError(f"not a {MANIFEST_FORMAT} manifest")
            body["normalisation"] = tuple(body["normalisation"])
            return cls(**body)
        except (ValueError, TypeError, KeyError) as error:
            raise ArtifactRefused(f"{path}: malformed manifest ({error})") from None

    @classmethod
    def describe(cls, kind: str, artifact: str | Path, card: ModelCard, precision: str, shape: tuple[int, int, int],
                 batch: int | None, **facts: Any) -> Manifest:  # fmt: skip
        """The manifest of a freshly written artifact made from the weights behind `card`;
        shape: (frames, height, width); facts: versions=…, device=…."""
        frames, height, width = shape
        return cls(format=kind, artifact_sha256=sha256_file(artifact), weights_sha256=card.weights_sha256,
                   precision=precision, frames=frames, height=height, width=width, batch=batch,
                   config=card.config.to_dict(), normalisation=card.normalisation, **facts)  # fmt: skip

    def write(self, artifact: str | Path) -> Path:
        self.created = self.created or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        return atomic_write_text(manifest_path(artifact), self.to_json())


def card_from_manifest(manifest: Manifest) -> ModelCard:
    """The model card an artifact carries in its manifest (configuration, normalisation, source weights)."""
    return ModelCard(
        config=ModelConfig.from_dict(manifest.config),
        normalisation=manifest.normalisation,
        weights_sha256=manifest.weights_sha256,
        notes=f"exported {manifest.format} artifact ({manifest.precision})",
    )


def verify(artifact: str | Path, expected_format: str) -> Manifest:
    """The artifact's manifest, after checking format and hashes (and, for ONNX, that external data files are
    plain files inside the model's folder whose hashes match)."""
    artifact = Path(artifact)
    if not artifact.is_file():
        raise ArtifactRefused(f"{artifact}: no such file")
    manifest = Manifest.read(artifact)
    if manifest.format != expected_format:
        raise ArtifactRefused(f"{artifact}: the manifest is for a {manifest.format} artifact, not {expected_format}")
    actual = sha256_file(artifact)
    if actual != manifest.artifact_sha256:
        raise ArtifactRefused(f"{artifact}: sha256 {actual[:12]}… differs from its manifest's "
                              f"{manifest.artifact_sha256[:12]}… (modified or replaced)")  # fmt: skip
    folder = artifact.resolve().parent
    if expected_format == "onnx":
        unlisted = set(onnx_external_files(artifact)) - set(manifest.external_data)
        if unlisted:
            raise ArtifactRefused(f"{artifact}: external data {sorted(unlisted)} not listed in its manifest")
    for name, digest in manifest.external_data.items():
        data = (folder / name).resolve()
        if data.parent != folder or not data.is_file():
            raise ArtifactRefused(f"{artifact}: external data {name!r} is not a file in the model's folder")
        if sha256_file(data) != digest:
            raise ArtifactRefused(f"{artifact}: external data {name} differs from its manifest")
    return manifest


def onnx_external_files(path: str | Path) -> list[str]:
    """The external-data file names an ONNX model refers to (without reading them)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    tensors = list(model.graph.initializer)
    for node in model.graph.node:  # Constant nodes and other tensor attributes (the graphs have no subgraphs)
        for attribute in node.attribute:
            tensors += [attribute.t, *attribute.tensors] if attribute.HasField("t") else list(attribute.tensors)
    names = set()
    for tensor in tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            names |= {entry.value for entry in tensor.external_data if entry.key == "location"}
    return sorted(names)
