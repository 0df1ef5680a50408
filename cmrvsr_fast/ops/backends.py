"""Which backend runs an op: a backend asked for by name that cannot run raises; "auto" falls back to the
PyTorch reference and logs why, once per reason."""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)
BACKENDS = ("auto", "reference", "triton", "cuda")
_LOGGED: set[str] = set()


class BackendUnavailable(RuntimeError):
    """A kernel backend asked for by name cannot run here (the reason is in the message)."""


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


def cuda_unavailable_reason(device: torch.device) -> str | None:
    """None when the CUDA C++ extension can run on `device`, else why not."""
    from cmrvsr_fast.ops import extension as _ext

    if not _ext.available():
        return f"the CUDA extension cmrvsr_fast._C is unavailable ({_ext.UNAVAILABLE_REASON})"
    if device.type != "cuda":
        return f"the CUDA extension runs on CUDA tensors; these are on {device}"
    return None


def log_once(message: str) -> None:
    """Log why a fallback was taken, once per distinct message (the ops and the Engine resolve per call)."""
    if message not in _LOGGED:
        _LOGGED.add(message)
        log.info("%s", message)


def resolve_backend(backend: str, device: torch.device, op: str = "op", cuda_twin: bool = False) -> str:
    """The backend that runs `op`; cuda_twin: whether the op has a CUDA C++ kernel. "auto" prefers Triton, then
    CUDA C++, then the reference."""
    if backend not in BACKENDS:
        raise ValueError(f"{op} backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "reference":
        return backend
    reasons = {"triton": triton_unavailable_reason(device)}
    reasons["cuda"] = cuda_unavailable_reason(device) if cuda_twin else f"{op} has no CUDA C++ kernel yet"
    if backend != "auto":
        if reasons[backend] is not None:
            raise BackendUnavailable(f"backend {backend!r} was asked for, but {reasons[backend]}")
        return backend
    for candidate in ("triton", "cuda"):
        if reasons[candidate] is None:
            return candidate
    reason = "; ".join(f"{name}: {text}" for name, text in reasons.items())
    log_once(f"{op}: using the PyTorch reference ({reason})")
    return "reference"
