"""The optional TensorRT import, shared by the engine builder and the engine runner.

TensorRT is the `tensorrt` extra and needs an NVIDIA GPU: importing this module never fails, `require_tensorrt`
says why TensorRT cannot be used here.
"""

from __future__ import annotations

import torch

UNAVAILABLE = None
try:
    import tensorrt as trt
except ImportError as error:  # the optional extra is not installed
    trt = None
    UNAVAILABLE = f"TensorRT is not installed (pip install 'cmrvsr_fast[tensorrt]'): {error}"


def require_tensorrt() -> None:
    """RuntimeError naming the reason when TensorRT cannot run here."""
    if trt is None:
        raise RuntimeError(UNAVAILABLE)
    if not torch.cuda.is_available():
        raise RuntimeError("TensorRT needs an NVIDIA GPU, and torch sees none")
