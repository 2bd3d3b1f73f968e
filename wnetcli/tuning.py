"""Process-level speed settings.

BLAS threads: the post-processing's few BLAS calls (the k-means of the textons, inside
``scipy.cluster.vq``) are small, and OpenBLAS's threads, once woken, spin while they wait for
more work: CPU time with no gain in wall time, and beside a second post-processing worker the
spinning took the core that worker needed (docs/experiments.md). :func:`single_threaded_blas`
limits them.

malloc:
glibc's malloc serves every block above ``M_MMAP_THRESHOLD`` (dynamic, capped at 32 MB)
with its own ``mmap`` and gives it back with ``munmap`` on free, so a training step or an
inference that allocates the same large activation buffers every iteration page-faults
them in again each time. Raising the mmap and trim thresholds keeps freed buffers in the
heap for reuse: faster training steps and inference on CPU (``benchmarks/bench_train_step.py``;
docs/experiments.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# 1 GiB: larger than any single buffer we allocate, and glibc's upper bound for the
# mmap threshold on 64-bit (HEAP_MAX_SIZE / 2 is 32 MiB only for the dynamic default).
_THRESHOLD_BYTES = 1 << 30

_applied = False


def tune_malloc() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; return True if applied.

    Does nothing (returns False) off glibc, when already applied, or when the user set
    ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` themselves, or
    ``WNET_NO_MALLOC_TUNING=1``.
    """
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("WNET_NO_MALLOC_TUNING") == "1":
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    try:
        libc = ctypes.CDLL(libc_name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _THRESHOLD_BYTES) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, _THRESHOLD_BYTES) == 1 and ok
    _applied = ok
    return ok


def single_threaded_blas():
    """Limit BLAS libraries (OpenBLAS, MKL, BLIS) to one thread: a ``threadpoolctl`` limiter.

    Use it as a context manager (the previous limits come back on exit), or call it once in a
    worker process and keep the returned object.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")
