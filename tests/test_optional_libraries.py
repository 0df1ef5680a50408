"""A test module that cannot import pydicom, nibabel or pynetdicom (the lent GPU image has none) is skipped with
the reason, so that the GPU tests still run there; under CI the same import fails (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WITHOUT_PYDICOM = """
import sys
sys.modules["pydicom"] = None  # `import pydicom` now raises ModuleNotFoundError
import pytest
sys.exit(pytest.main(["-q", "-rs", "-p", "no:cacheprovider", "tests/test_dicom_io.py", "tests/test_config.py"]))
"""


def run_without_pydicom(ci: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": "true"} if ci else {})
    return subprocess.run([sys.executable, "-c", WITHOUT_PYDICOM], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


@pytest.mark.parametrize("ci", [False, True], ids=["device", "ci"])
def test_a_missing_dicom_library_skips_its_modules_but_not_under_ci(ci: bool) -> None:
    done = run_without_pydicom(ci)
    if ci:
        assert done.returncode != 0 and "error during collection" in done.stdout
    else:
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SKIPPED [1] tests/test_dicom_io.py:0: pydicom is not installed here" in done.stdout
        assert " passed" in done.stdout  # test_config.py's tests ran
