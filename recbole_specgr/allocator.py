"""
recbole_specgr.allocator
########################
``keep_freed_memory: True``: glibc's malloc keeps memory the process freed instead of handing it back to the system.

By default glibc serves allocations above a (dynamic, at most 32 MiB) size by ``mmap`` and trims the heap's free top,
so a training or decoding step that frees its activations gets fresh pages for the next step's, and the kernel
zero-fills every page again on first touch: 3,000–14,000 minor page faults per TIGER training step at TIGER.yaml's
sizes (B = 256). With the thresholds below they drop to ~30–300 and the one-thread step ran 5% (compiled) to 17%
(eager) faster (``benchmarks/reports/diagnostics/profile_train_step_compiled*.txt``). The price: what a step freed
stays resident for the next one. The setting holds for the rest of the process (a later run in it with the key off
keeps it). Nothing changes where glibc is not the allocator, or where the user set these thresholds themselves
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or their ``GLIBC_TUNABLES``): theirs win.
"""

import ctypes
import logging
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = (256 << 20, 32 << 20)  # allocations up to this size come from the heap (older glibc: ≤ 32 MiB)
TRIM_THRESHOLD_BYTES = 1 << 30  # free heap top kept up to this size
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
USER_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold")


def _glibc_mallopt():
    """glibc's ``mallopt`` (int, int) -> int, or None where the C library is not glibc (musl, macOS, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (above) for this process. Returns whether they were set; a glibc that
    refuses them gets one warning."""
    if any(key in os.environ for key in USER_SETTINGS) or any(t in os.environ.get("GLIBC_TUNABLES", "")
                                                              for t in USER_TUNABLES):
        return False
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    mmap_set = any(mallopt(M_MMAP_THRESHOLD, size) == 1 for size in MMAP_THRESHOLD_BYTES)
    if mmap_set and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1:
        return True
    logging.getLogger(__name__).warning("keep_freed_memory: glibc refused the mmap/trim thresholds (mallopt); "
                                        "freed memory goes back to the system as usual")
    return False
