"""Export: ONNX (onnxruntime parity), AOTInductor (CPU parity), manifests and every refusal path, loading an
artifact as an Upscaler, the export CLI; TensorRT where TensorRT and a GPU exist."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from cmrvsr_fast.export.graphs import LstmStep
from cmrvsr_fast.export.manifest import ArtifactRefused, Manifest, manifest_path, sha256_file, verify
from cmrvsr_fast.export.onnx_export import export_onnx
from cmrvsr_fast.export.runners import OnnxRunner, ShapeMismatch, load_runner
from conftest import make_inputs
from tolerances import relative_l2

from cmrvsr_fast import cli, load
from cmrvsr_fast.inference.runner import NetworkRunner
from cmrvsr_fast.model.checkpoint import ModelCard
from cmrvsr_fast.model.config import ModelConfig
from cmrvsr_fast.model.network import CMRVSR

ONNX_TOLERANCE = 1e-4  # relative L2 against the reference model (the contract)
FRAMES, HEIGHT, WIDTH = 5, 10, 12


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    config = ModelConfig.from_name("lite-x4").replace(features=8)
    return CMRVSR(config).eval(), ModelCard(config, weights_sha256="ab" * 32)


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory, small_model):
    model, card = small_model
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(model, card, path, FRAMES, HEIGHT, WIDTH)
    return path


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_matches_reference_with_dynamic_batch(small_model, onnx_file, batch):
    model, _ = small_model
    lr, phase = make_inputs(batch, FRAMES, HEIGHT, WIDTH)
    with torch.no_grad():
        expected = model(lr, phase)
    got = OnnxRunner(onnx_file)(lr, phase)
    assert got.shape == expected.shape == (batch, FRAMES, 1, 4 * HEIGHT, 4 * WIDTH)
    assert relative_l2(got, expected) <= ONNX_TOLERANCE


def test_onnx_step_graph_matches_the_cells(small_model, onnx_file):
    import onnxruntime as ort

    model, _ = small_model
    step = onnx_file.with_name("model.step.onnx")
    verify(step, "onnx")
    f, layers = model.config.features, model.config.lstm_layers
    torch.manual_seed(1)
    x = torch.randn(2, 2, f, HEIGHT, WIDTH)
    h, c = torch.randn(2, layers, 2, f, HEIGHT, WIDTH), torch.randn(2, layers, 2, f, HEIGHT, WIDTH)
    with torch.no_grad():
        expected = LstmStep(model)(x, h, c)
    session = ort.InferenceSession(str(step), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x.numpy(), "h": h.numpy(), "c": c.numpy()})
    for g, e in zip(got, expected, strict=True):
        assert relative_l2(torch.from_numpy(g), e) <= ONNX_TOLERANCE


def test_loaded_onnx_upscaler_and_shape_mismatch(onnx_file, small_model):
    upscaler = load(onnx_file, device="cpu")
    assert upscaler.scale == 4 and upscaler.precision == "fp32"
    assert isinstance(upscaler.runner, OnnxRunner) and isinstance(upscaler.runner, NetworkRunner)
    assert upscaler.model is None and upscaler.tile_core(FRAMES, HEIGHT, WIDTH) is None  # fixed shapes: no tiles
    rng = np.random.default_rng(0)
    cine = rng.uniform(0, 900, (FRAMES, HEIGHT, WIDTH))
    out = upscaler.upscale(cine, es=2)
    assert out.shape == (FRAMES, 4 * HEIGHT, 4 * WIDTH) and np.isfinite(out).all()
    with pytest.raises(ShapeMismatch, match="exported for T×H×W = 5×10×12"):
        upscaler.upscale(rng.uniform(0, 900, (FRAMES + 1, HEIGHT, WIDTH)), es=2)


def _copy(onnx_file, tmp_path):
    target = tmp_path / "model.onnx"
    shutil.copy(onnx_file, target)
    shutil.copy(manifest_path(onnx_file), manifest_path(target))
    return target


def test_refusals(onnx_file, tmp_path):
    target = _copy(onnx_file, tmp_path)
    verify(target, "onnx")
    with pytest.raises(ArtifactRefused, match="not tensorrt"):
        verify(target, "tensorrt")
    with target.open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ArtifactRefused, match="modified or replaced"):
        load_runner(target)
    target = _copy(onnx_file, tmp_path)
    body = json.loads(manifest_path(target).read_text())
    body["external_data"] = {"../outside.bin": "00"}
    manifest_path(target).write_text(json.dumps(body))
    with pytest.raises(ArtifactRefused, match="not a file in the model's folder"):
        load_runner(target)
    manifest_path(target).write_text("{not json")
    with pytest.raises(ArtifactRefused, match="malformed manifest"):
        load_runner(target)
    manifest_path(target).unlink()
    with pytest.raises(ArtifactRefused, match="unknown origin"):
        load_runner(target)
    with pytest.raises(ArtifactRefused, match="not an exported artifact"):
        load_runner(tmp_path / "weights.bin")


def test_onnx_external_data_must_be_listed_and_inside(small_model, tmp_path):
    import onnx

    model, card = small_model
    path = tmp_path / "m" / "model.onnx"
    export_onnx(model, card, path, FRAMES, HEIGHT, WIDTH)
    proto = onnx.load(str(path))
    onnx.save(proto, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0,
              convert_attribute=True)  # fmt: skip
    manifest = Manifest.read(path)
    manifest.artifact_sha256 = sha256_file(path)
    manifest.write(path)
    with pytest.raises(ArtifactRefused, match="not listed in its manifest"):
        verify(path, "onnx")


def test_aoti_cpu_package_matches_reference(small_model, tmp_path):
    from cmrvsr_fast.export.aoti_export import export_aoti

    model, card = small_model
    path = tmp_path / "model.pt2"
    export_aoti(model, card, path, frames=3, height=8, width=8, batch=1)
    lr, phase = make_inputs(1, 3, 8, 8)
    with torch.no_grad():
        expected = model(lr, phase)
    runner = load_runner(path)
    assert relative_l2(runner(lr, phase), expected) <= ONNX_TOLERANCE
    body = json.loads(manifest_path(path).read_text())
    body["versions"]["torch"] = "1.0.0"
    manifest_path(path).write_text(json.dumps(body))
    with pytest.raises(ArtifactRefused, match="tied to the torch that built it"):
        load_runner(path)


def test_export_cli(tmp_path, capsys):
    out = tmp_path / "default.onnx"
    args = ["export", "--format", "onnx", "--frames", "4", "--height", "8", "--width", "8", "--out", str(out)]
    assert cli.main(args) == 0 and out.is_file() and manifest_path(out).is_file()
    assert Manifest.read(out).weights_sha256 == load().card.weights_sha256
    assert cli.main(args) == 2 and "exists" in capsys.readouterr().err
    assert cli.main([*args[:-1], str(tmp_path / "x.engine")]) == 2  # suffix does not fit the format
    assert cli.main([*args[:-2], "--out", str(tmp_path / "y.onnx"), "--precision", "fp16"]) == 2
    try:
        import tensorrt  # noqa: F401

        have_trt = torch.cuda.is_available()
    except ImportError:
        have_trt = False
    if not have_trt:
        code = cli.main(["export", "--format", "tensorrt", "--frames", "4", "--height", "8", "--width", "8",
                         "--out", str(tmp_path / "m.engine")])  # fmt: skip
        assert code == 2 and ("TensorRT is not installed" in capsys.readouterr().err or not torch.cuda.is_available())


def test_upscale_cli_accepts_an_artifact(tmp_path, capsys):
    from dicom_fixtures import write_cine_series

    write_cine_series(tmp_path / "scanner", slices=1, frames=8, size=24)
    model_path = tmp_path / "models" / "m.onnx"
    assert cli.main(["export", "--format", "onnx", "--frames", "8", "--height", "24", "--width", "24",
                     "--out", str(model_path)]) == 0  # fmt: skip
    code = cli.main(["upscale", str(tmp_path / "scanner"), str(tmp_path / "out"), "--weights", str(model_path),
                     "--quiet", "--device", "cpu"])  # fmt: skip
    assert code == 0, capsys.readouterr()
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 8


@pytest.mark.gpu
def test_tensorrt_engine_matches_reference(small_model, onnx_file, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (the `tensorrt` extra)")
    from cmrvsr_fast.export.tensorrt_build import build_engine

    model, _ = small_model
    target = _copy(onnx_file, tmp_path)
    build_engine(target, tmp_path / "model.engine", precision="fp16", max_batch=2)
    runner = load_runner(tmp_path / "model.engine")
    lr, phase = make_inputs(2, FRAMES, HEIGHT, WIDTH)
    with torch.no_grad():
        expected = model(lr, phase)
    assert relative_l2(runner(lr.cuda(), phase.cuda()).cpu(), expected) <= 1e-2
    body = json.loads(manifest_path(tmp_path / "model.engine").read_text())
    body["device"]["compute_capability"] = "1.0"
    manifest_path(tmp_path / "model.engine").write_text(json.dumps(body))
    with pytest.raises(ArtifactRefused, match="compute capability"):
        load_runner(tmp_path / "model.engine")
