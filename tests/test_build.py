"""Packaging: the CUDA and CPU extensions built here, a plain wheel install, and an install that survives nvcc
failing."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import cmrvsr_fast
from cmrvsr_fast.ops import extension as _ext

ROOT = Path(__file__).resolve().parents[1]
NVCC = shutil.which("nvcc") is not None and os.environ.get("CMRVSR_SKIP_CUDA_BUILD") != "1"


@pytest.mark.skipif(not NVCC, reason="nvcc is not on PATH (or CMRVSR_SKIP_CUDA_BUILD=1): no extension was built")
def test_extension_was_built_and_answers() -> None:
    assert _ext.available(), _ext.UNAVAILABLE_REASON
    ext = _ext.extension()
    assert ext.compiled_archs() == [80, 86, 87, 89, 90]
    assert ext.cuda_runtime_version() >= 12000
    assert callable(ext.convlstm_step) and callable(ext.window_conv3x3)  # the launchers (run in gpu-marked tests)
    assert ext.convlstm_step_kernel(1, 64).startswith("tensor-core")  # bf16, F = 64: the WMMA kernel
    assert ext.convlstm_step_kernel(2, 32).startswith("tensor-core")  # fp16
    assert ext.convlstm_step_kernel(0, 64).startswith("scalar")  # fp32
    assert ext.convlstm_step_kernel(1, 24).startswith("scalar")  # F not a multiple of 16
    count, message = ext.device_count()
    assert count >= 0 and (count > 0 or message)  # here: no driver, and the runtime says so


def test_missing_extension_reports_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cmrvsr_fast._C", None)  # makes `from . import _C` raise ImportError
    monkeypatch.delattr(cmrvsr_fast, "_C", raising=False)
    try:
        missing = importlib.reload(_ext)
        assert not missing.available()
        with pytest.raises(RuntimeError, match="not built or cannot load"):
            missing.extension()
    finally:
        monkeypatch.undo()
        importlib.reload(_ext)
    assert _ext.available() == NVCC


def build_wheel(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Build a wheel from a copy of the sources (so that the checkout gets no build/ or egg-info)."""
    source = tmp_path / "src"
    for name in ("setup.py", "pyproject.toml", "README.md"):
        source.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    for name in ("cmrvsr_fast", "kernels", "export", "csrc"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-v",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            ".",
        ],
        cwd=source,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def wheel_names(tmp_path: Path) -> list[str]:
    (wheel,) = (tmp_path / "dist").glob("cmrvsr_fast-*.whl")
    return zipfile.ZipFile(wheel).namelist()


@pytest.mark.slow
def test_plain_wheel_installs_and_imports(tmp_path: Path) -> None:
    result = build_wheel(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    names = wheel_names(tmp_path)
    assert "cmrvsr_fast/kernels/__init__.py" in names and "cmrvsr_fast/export/__init__.py" in names
    assert any(n.startswith("cmrvsr_fast/_C") and n.endswith(".so") for n in names) == NVCC
    assert any(n.startswith("cmrvsr_fast/_cpu") and n.endswith(".so") for n in names)  # a C++ compiler is here
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)]
    subprocess.run(pip, check=True, capture_output=True)
    probe = (
        "import cmrvsr_fast, cmrvsr_fast.kernels, cmrvsr_fast.export, torch;"
        "from cmrvsr_fast.ops import extension as _ext, winograd;"
        "m = cmrvsr_fast.CMRVSR(cmrvsr_fast.ModelConfig(features=4, lstm_layers=1, warmup=1, stages=1)).eval();"
        "print(cmrvsr_fast.__file__, _ext.available(), winograd.available(),"
        " tuple(m(torch.zeros(1, 2, 1, 3, 3), torch.zeros(1, 2)).shape))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONPATH": str(target)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out[0].startswith(str(target)) and out[1:3] == [str(NVCC), "True"]
    assert out[3:] == ["(1,", "2,", "1,", "12,", "12)"]


@pytest.mark.slow
@pytest.mark.skipif(not NVCC, reason="needs nvcc to exercise a failing CUDA build")
def test_failed_cuda_build_does_not_fail_the_install(tmp_path: Path) -> None:
    result = build_wheel(tmp_path, CMRVSR_CUDA_ARCHS="12")  # an architecture nvcc refuses
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipping the optional CUDA extension" in result.stdout + result.stderr
    assert not any(n.startswith("cmrvsr_fast/_C") for n in wheel_names(tmp_path))
    assert any(n.startswith("cmrvsr_fast/_cpu") for n in wheel_names(tmp_path))  # the other one is still built


@pytest.mark.slow
@pytest.mark.skipif(not NVCC, reason="needs nvcc to exercise a failing CUDA build")
def test_failed_cuda_build_fails_when_required(tmp_path: Path) -> None:
    result = build_wheel(tmp_path, CMRVSR_CUDA_ARCHS="12", CMRVSR_BUILD_CUDA="1")
    assert result.returncode != 0


def test_skip_flags_build_a_pure_wheel(tmp_path: Path) -> None:
    result = build_wheel(tmp_path, CMRVSR_SKIP_CUDA_BUILD="1", CMRVSR_SKIP_CPU_BUILD="1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not any(n.endswith(".so") for n in wheel_names(tmp_path))


@pytest.mark.skipif(not NVCC, reason="nvcc is not on PATH (or CMRVSR_SKIP_CUDA_BUILD=1)")
@pytest.mark.parametrize("source", ["convlstm.cu", "phase_fusion.cu"])
def test_the_kernels_issue_tensor_core_instructions(tmp_path: Path, source: str) -> None:
    ptx = tmp_path / "kernel.ptx"
    subprocess.run(["nvcc", "-std=c++17", "-arch=sm_80", "-ptx", str(ROOT / "csrc" / source), "-o", str(ptx)],
                   check=True, capture_output=True)  # fmt: skip
    text = ptx.read_text()
    assert "wmma.mma.sync.aligned.row.row.m16n16k16.f32.bf16.bf16.f32" in text  # bf16 in, fp32 accumulate
    assert text.count("wmma.mma.sync") >= 8  # bf16 and fp16, four pixel fragments each
