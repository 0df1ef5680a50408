"""Shared test setup: deterministic seeds, CPU threads, the GPU marker's skip rule, and modules that need a DICOM or
NIfTI library skipped where it is missing (the GPU image)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch
from tolerances import ieee_float32

from cmrvsr_fast import CMRVSR, ModelConfig

# The DICOM and NIfTI libraries the lent GPU image lacks (it has no network to install them): there a test module
# that cannot import one of them is reported as skipped, with the reason, instead of failing its collection and
# with it the GPU tests' run. Under CI (`make install` brings them) it fails as any import error does.
OPTIONAL_LIBRARIES = ("pydicom", "nibabel", "pynetdicom")
_MISSING = re.compile(r"No module named '([\w.]+)'|import of ([\w.]+) halted")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    outcome = yield
    report = outcome.get_result()
    under_ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    if not report.failed or not isinstance(collector, pytest.Module) or under_ci:
        return
    found = _MISSING.search(str(report.longrepr))
    missing = found and (found.group(1) or found.group(2)).split(".")[0]
    if missing in OPTIONAL_LIBRARIES:
        report.outcome = "skipped"
        report.longrepr = (str(collector.path), 0, f"Skipped: {missing} is not installed here (the GPU image has "
                           "none; `make install` or a wheel carried to the device check brings it)")  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none is visible to torch on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(1234)


@pytest.fixture(autouse=True)
def _float32_means_ieee():
    with ieee_float32():  # tests/tolerances.py says why
        yield


@pytest.fixture
def tiny_config() -> ModelConfig:
    """A small member of the family: every code path of the paper preset, a fraction of the arithmetic."""
    return ModelConfig(scale=4, features=6, lstm_layers=2, window=5, warmup=3, stages=3)


def make_model(config: ModelConfig, dtype: torch.dtype = torch.float32) -> CMRVSR:
    """A model with non-default weights (so that no parameter's role hides behind its initialisation)."""
    model = CMRVSR(config).to(dtype)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


def make_inputs(batch: int, frames: int, height: int, width: int, dtype: torch.dtype = torch.float32):
    lr = torch.randn(batch, frames, 1, height, width, dtype=dtype)
    phase = torch.rand(batch, frames, dtype=dtype) * 2 - 1
    return lr, phase


def run_under_triton_interpreter(script: str) -> str:
    """Run `script` in a fresh Python with TRITON_INTERPRET=1 (it must be set before triton is imported) and
    tests/ importable; returns its stdout, failing the test with its stderr if it fails."""
    pytest.importorskip("triton", reason="triton is not installed")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.path.dirname(__file__)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout
