"""glibc malloc settings for the extraction loop: freed activations stay in the heap between batches.

A CPU forward pass allocates its activations afresh for every batch. With glibc's defaults a freed
block of a few MB or more goes back to the kernel (``munmap``, or trimming of the heap's top), and
the next batch page-faults the same amount in again, a page at a time. How many faults a pass takes
depends on the process's heap history, which made throughput erratic; with the settings below,
MobileNetV2 extracted 2.6x faster at 160 px on one core (BENCHMARKS.md section 6).

:func:`retain_freed_memory` raises ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` while extraction
runs (1 GiB and 2 GiB), so activations up to 1 GiB come from the heap and stay there for the next
batch: the memory is the pass's own working set, held between batches instead of being returned and
faulted back (peak resident memory rose by up to 31 % at 224 px). On leaving it sets the thresholds
to 32 MiB / 64 MiB, the values glibc's own adaptive thresholds grow to once a process has freed a
large block (glibc offers no way to read the previous values), and calls ``malloc_trim(0)``, which
returns the free memory to the kernel.

The settings are process-wide and glibc cannot report the previous values, so a library must not
make them behind its host's back: they are **opt-in**. They apply only when ``EMMS_TUNE_MALLOC=1``;
the ``emms`` command line sets that for its own process (and the Dask workers it starts inherit it),
so the CLI gets the measured gain while ``import emms`` in a user's process changes nothing. Even
when opted in, nothing is changed when the C library is not glibc or when the user configured
glibc's allocator through the environment (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``,
``MALLOC_TOP_PAD_`` or ``malloc`` tunables in ``GLIBC_TUNABLES``). Nested and concurrent uses
(threads) are counted: the first entry sets them, the last exit restores them.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import threading
from collections.abc import Iterator

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers from glibc's malloc.h
_RETAIN = {_M_MMAP_THRESHOLD: 1 << 30, _M_TRIM_THRESHOLD: 2**31 - 1}  # mallopt takes a C int: at most 2 GiB
_RESTORE = {_M_MMAP_THRESHOLD: 32 << 20, _M_TRIM_THRESHOLD: 64 << 20}
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")

_lock = threading.Lock()
_active = 0


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (mallopt and malloc_trim available), else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    libc = ctypes.CDLL(None)
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def _tuning_enabled() -> bool:
    """Whether the process opted in (``EMMS_TUNE_MALLOC=1``) and left glibc's allocator settings alone."""
    return (os.environ.get("EMMS_TUNE_MALLOC") == "1" and not any(name in os.environ for name in _USER_SETTINGS)
            and "malloc." not in os.environ.get("GLIBC_TUNABLES", ""))


def _set(libc: ctypes.CDLL, values: dict[int, int]) -> None:
    for parameter, value in values.items():
        libc.mallopt(ctypes.c_int(parameter), ctypes.c_int(value))


@contextlib.contextmanager
def retain_freed_memory() -> Iterator[bool]:
    """Keep freed memory in the heap while the block runs; yields whether the settings were applied."""
    global _active
    libc = _glibc()
    if libc is None or not _tuning_enabled():
        yield False
        return
    with _lock:
        if _active == 0:
            _set(libc, _RETAIN)
        _active += 1
    try:
        yield True
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                _set(libc, _RESTORE)
                libc.malloc_trim(ctypes.c_size_t(0))
