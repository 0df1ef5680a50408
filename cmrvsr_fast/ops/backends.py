"""Which backend runs an op: the one module that decides, for the ops and for the Engine.

Backends: "torch" (PyTorch ops: the op's reference), "triton" (the Triton kernels), "cuda" (the CUDA C++ twins in
cmrvsr_fast._C) and "auto". A backend asked for by name that cannot run raises BackendUnavailable; "auto" takes
the choice of `AUTO_PREFERENCE` (a pure function of the device's facts: `auto_backend`) and logs, once, why it
did not take a kernel where it did not.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import torch

log = logging.getLogger(__name__)
BACKENDS = ("auto", "torch", "triton", "cuda")
OPS = ("convlstm_layer", "window_conv3x3")  # the fused ops: the ConvLSTM recurrence, the window fusion
# The compute capability the kernels target: bf16 tensor-core dots, the extension's default architectures
# (setup.py) and the GPUs measured.
KERNEL_CAPABILITY = (8, 0)

# What "auto" runs on a CUDA device of compute capability KERNEL_CAPABILITY or newer: per op, the first backend
# of its list that can run there. Off CUDA, or on an older GPU, it runs PyTorch ops (on the CPU the Triton
# interpreter is a testing aid, never faster).
AUTO_PREFERENCE = {
    # The Triton layer op beat PyTorch ops, and PyTorch ops beat the CUDA C++ steps (see docs/performance.md,
    # 'Backend choices'): where Triton cannot run, "auto" takes PyTorch ops; the CUDA C++ kernels run when named.
    "convlstm_layer": ("triton", "torch"),
    # cuDNN's convolutions beat both fusion kernels (see docs/performance.md, 'Backend choices').
    "window_conv3x3": ("torch",),
}

# Named pairings of per-op backends for benchmarks and the command line: one fused kernel, PyTorch ops for the
# other op (docs/performance.md has the pairing measured fastest).
PAIRED_BACKENDS = {"triton-step": {"convlstm_layer": "triton"}, "triton-fusion": {"window_conv3x3": "triton"}}

_LOGGED: set[str] = set()


class BackendUnavailable(RuntimeError):
    """A kernel backend asked for by name cannot run here (the reason is in the message)."""


def auto_backend(
    op: str, device_type: str, capability: tuple[int, int] | None, triton_available: bool, extension_available: bool
) -> str:
    """The backend "auto" picks for `op` on a device with these facts (capability: a CUDA device's, else None)."""
    if op not in AUTO_PREFERENCE:
        raise ValueError(f"unknown op {op!r}; the fused ops are {list(OPS)}")
    if device_type != "cuda" or capability is None or tuple(capability) < KERNEL_CAPABILITY:
        return "torch"
    runs = {"triton": triton_available, "cuda": extension_available, "torch": True}
    return next(backend for backend in AUTO_PREFERENCE[op] if runs[backend])


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


UNAVAILABLE_REASONS = {"triton": triton_unavailable_reason, "cuda": cuda_unavailable_reason}


def log_once(message: str) -> None:
    """Log why a fallback was taken, once per distinct message (the ops resolve on every call)."""
    if message not in _LOGGED:
        _LOGGED.add(message)
        log.info("%s", message)


def resolve_backend(op: str, backend: str, device: torch.device) -> str:
    """The backend that runs `op` on `device`: a named one if it can run there (else BackendUnavailable), or the
    choice of "auto"."""
    if backend not in BACKENDS:
        raise ValueError(f"{op} backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return _auto(op, device)
    reason = UNAVAILABLE_REASONS[backend](device) if backend in UNAVAILABLE_REASONS else None
    if reason is not None:
        raise BackendUnavailable(f"{op}: backend {backend!r} was asked for, but {reason}")
    return backend


def per_op_backends(backend: str | Mapping[str, str]) -> dict[str, str]:
    """One backend name for every fused op, or a mapping {op: name} (an op left out runs on PyTorch ops)."""
    per_op = dict(backend) if isinstance(backend, Mapping) else dict.fromkeys(OPS, backend)
    unknown = set(per_op) - set(OPS)
    if unknown:
        raise ValueError(f"backend: unknown op(s) {sorted(unknown)}; the fused ops are {list(OPS)}")
    for op, name in per_op.items():
        if name not in BACKENDS:
            raise ValueError(f"backend {name!r} for {op}: choose one of {', '.join(BACKENDS)}")
    return {op: per_op.get(op, "torch") for op in OPS}


def _auto(op: str, device: torch.device) -> str:
    """`auto_backend` on this device's facts, logging why no kernel was taken where a kernel exists."""
    is_cuda = device.type == "cuda"
    capability = torch.cuda.get_device_capability(device) if is_cuda else None
    reasons = {name: unavailable(device) for name, unavailable in UNAVAILABLE_REASONS.items()}
    chosen = auto_backend(op, device.type, capability, reasons["triton"] is None, reasons["cuda"] is None)
    if chosen == "torch" and AUTO_PREFERENCE[op][0] != "torch":
        if not is_cuda:
            why = "the kernels pay off on a CUDA GPU only"
        elif tuple(capability) < KERNEL_CAPABILITY:
            why = f"the kernels target compute capability {KERNEL_CAPABILITY}, {device} has {capability}"
        else:
            why = "; ".join(f"{name}: {text}" for name, text in reasons.items() if text)
        log_once(f"{op}: PyTorch ops on {device} ({why})")
    return chosen
