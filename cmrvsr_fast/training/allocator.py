"""glibc's allocator told to keep the memory a training process frees, as the process's own setting.

Training the reference model allocates and frees every step's activations (hundreds of megabytes). By default
glibc serves large blocks with mmap and hands them back to the kernel when they are freed, or trims its heap
once enough at its top is free; the next step then faults the same pages in again, zeroed by the kernel
(docs/performance.md, "Training cost", has what that costs). `keep_freed_memory`
sets what the environment variables MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_ and MALLOC_TOP_PAD_ would, for
the process that calls it: `cmrvsr-fast train` and the training benchmarks call it first; importing the library
never does (a process that calls it keeps its peak memory until it exits). Inference has no need of it: the
Engine keeps its own buffers (inference/stepwise.py).
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

# mallopt's parameters (malloc.h) and the values: no block served by mmap, nothing trimmed, 1 GiB more per sbrk.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = {M_MMAP_THRESHOLD: 2**31 - 1, M_TRIM_THRESHOLD: 2**31 - 1, M_TOP_PAD: 2**30}


def keep_freed_memory() -> bool:
    """Apply SETTINGS through glibc's mallopt; False (logged) where the C library is not glibc or refuses."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError) as error:
        log.info("allocator settings not applied: %s", error)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied = all(mallopt(parameter, value) == 1 for parameter, value in SETTINGS.items())
    if not applied:
        log.info("allocator settings not applied: mallopt refused them")
    return applied
