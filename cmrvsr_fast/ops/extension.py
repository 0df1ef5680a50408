"""The one place that imports the compiled CUDA extension cmrvsr_fast._C and records why it could not."""

from __future__ import annotations

from types import ModuleType

import torch

DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}  # the launchers' dtype argument (csrc/convlstm.h)

try:
    from cmrvsr_fast import _C as _compiled
except ImportError as error:
    _compiled = None
    UNAVAILABLE_REASON = (
        f"the CUDA extension cmrvsr_fast._C is not built or cannot load ({error}); it is built at install time "
        "when nvcc is found (set CMRVSR_BUILD_CUDA=1 to require it)"
    )
else:
    UNAVAILABLE_REASON = ""


def available() -> bool:
    return _compiled is not None


def extension() -> ModuleType:
    """The loaded extension, or a RuntimeError that says why it is unavailable."""
    if _compiled is None:
        raise RuntimeError(UNAVAILABLE_REASON)
    return _compiled
