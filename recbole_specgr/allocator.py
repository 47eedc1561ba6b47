"""
recbole_specgr.allocator
########################
``keep_freed_memory: True``: glibc's malloc keeps memory the process freed instead of handing it back to the system.

By default glibc serves allocations above a (dynamic) size by ``mmap`` and trims the heap's free top, so a training or
decoding step that frees its activations gets fresh pages for the next step's, and the kernel zero-fills every page
again on first touch: 3,000–14,000 minor page faults per TIGER training step at TIGER.yaml's sizes (B = 256). With
the thresholds below they drop to ~10–600 and the step runs 7–12% faster, compiled or eager
(``benchmarks/reports/diagnostics/profile_train_step_compiled*.txt``). The price is resident memory: what a step
freed stays with the process for the next one. Nothing changes where glibc is not the allocator, or where the user
set glibc's own ``MALLOC_*`` environment variables (they win).
"""

import ctypes
import logging
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 256 << 20  # allocations up to this size come from the heap, not a fresh mmap
TRIM_THRESHOLD_BYTES = 1 << 30  # free heap top kept up to this size


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (above) for this process. Returns whether they were set."""
    if not sys.platform.startswith("linux") or any(key.startswith("MALLOC_") for key in os.environ):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt  # glibc; musl has no libc.so.6 and no such tuning
    except (OSError, AttributeError):
        return False
    done = all(mallopt(option, value) == 1 for option, value in ((M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
                                                                  (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)))
    logging.getLogger(__name__).debug(f"keep_freed_memory: glibc thresholds {'set' if done else 'refused'}")
    return done
