"""The package's public surface: names import as documented, and the I/O layer stands without the model."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import cmrvsr_fast

ROOT = Path(__file__).resolve().parents[1]


def test_every_public_name_resolves() -> None:
    for name in cmrvsr_fast.__all__:
        assert getattr(cmrvsr_fast, name) is not None or name == "__version__", name
    assert cmrvsr_fast.Engine is importlib.import_module("cmrvsr_fast.inference.engine").Engine
    assert cmrvsr_fast.load is importlib.import_module("cmrvsr_fast.inference.upscaler").load


def test_unknown_names_are_attribute_errors() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Engin'"):
        _ = cmrvsr_fast.Engin


def test_io_does_not_load_the_engine_or_the_network() -> None:
    code = (
        "import sys, cmrvsr_fast.io, cmrvsr_fast.io.dicom_write, cmrvsr_fast.io.nifti;"
        "print(sorted(m for m in sys.modules if m.startswith(('cmrvsr_fast.inference', 'cmrvsr_fast.model.network',"
        " 'cmrvsr_fast.ops', 'cmrvsr_fast.kernels'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout


def test_version_has_one_source() -> None:
    setup_text = (ROOT / "setup.py").read_text(encoding="utf-8")
    assert "version=read_version()" in setup_text
    from importlib.metadata import version

    assert version("cmrvsr_fast") == cmrvsr_fast.__version__
