"""Fixed glibc malloc thresholds for the relay process (pure: no Twisted).

A relay moves data in reads of ~128 KiB: socket reads, OpenSSL's memory BIOs and the joined
writes are all allocations of that size, freed soon after. glibc's default is a *dynamic* mmap
threshold (128 KiB, raised to the largest chunk freed) with a trim threshold of twice that: the
heap top is handed back to the kernel and faulted in again over and over. Measured on this
project's bench (1 GiB through one session): about 390,000 page faults and 2.7 CPU s per GiB
with the defaults, 40 to 110 page faults and 1.6 CPU s with fixed thresholds. Fixing them keeps
allocations below ``mmap_threshold`` on the heap and lets up to ``trim_threshold`` of free heap
top stay mapped for the next read, nothing more.

It is a process-wide setting: the ``e2ae accessgw`` service makes it at start unless told not
to (``malloc_tuning = false``, ``--no-malloc-tuning``). Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes

#: mallopt(3) parameters.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 1 << 20
TRIM_THRESHOLD = 4 << 20


def tune_malloc(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Fix glibc's mmap and trim thresholds; True if the C library took both."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(M_TRIM_THRESHOLD, trim_threshold)
    )
