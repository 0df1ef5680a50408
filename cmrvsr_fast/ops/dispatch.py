"""Which backend runs an op: a backend asked for by name that cannot run raises; "auto" falls back to the
PyTorch reference and logs why, once per reason."""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)
BACKENDS = ("auto", "reference", "triton")
_LOGGED: set[str] = set()


def triton_unavailable_reason(device: torch.device) -> str | None:
    """None when Triton kernels can run on `device`, else why not."""
    try:
        import triton  # noqa: F401
    except ImportError as error:
        return f"triton is not installed ({error})"
    if device.type == "cuda":
        return None
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
        return None
    return f"Triton kernels run on CUDA tensors (or on the CPU under TRITON_INTERPRET=1); these are on {device}"


def resolve_backend(backend: str, device: torch.device, op: str = "op") -> str:
    if backend not in BACKENDS:
        raise ValueError(f"{op} backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "reference":
        return backend
    reason = triton_unavailable_reason(device)
    if reason is None:
        return "triton"
    if backend == "triton":
        raise RuntimeError(f"backend 'triton' was asked for, but {reason}")
    if reason not in _LOGGED:
        _LOGGED.add(reason)
        log.info("using the PyTorch reference ops: %s", reason)
    return "reference"
