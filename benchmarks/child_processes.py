"""Child processes that die with their parent (Linux): a benchmark step stopped at its time limit is SIGKILLed,
and nothing it started may go on using the GPU through the steps after it."""

from __future__ import annotations

import contextlib
import signal


def die_with_parent() -> None:
    """In the child, before exec (subprocess's preexec_fn): Linux delivers SIGKILL to it when its parent dies, even
    by SIGKILL (the device tool's time limit, or the device check's per-step limit)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
