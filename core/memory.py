"""How a ctclab process keeps the memory it frees: glibc's allocator told to keep freed heap memory
for reuse instead of handing it back to the system between batches.

    keep_freed_memory()     # once, at the start of a command (eval/run.py, the benchmarks, a worker)

numpy takes every array above a few hundred bytes from malloc. The beam search's schedule
(decoders/search_schedule.py) makes ~100 arrays of 1-25 MB per batch and frees them before the
next. glibc by default gives freed memory back to the system once more than twice the largest
freed block sits at the top of the heap (its dynamic M_TRIM_THRESHOLD), so the next batch's arrays
are page-faulted in again, 4 KiB at a time, and zeroed by the kernel: 20,600 minor faults a pass
over a test-clean-sized corpus (bench/decode_speed.py --inputs corpus), some 10% of the beam's
time there; 1,100 with the settings below, and the same peak memory (a process reaches its peak
either way; it keeps it). On small sets (the real 94 utterances) it changes nothing.

This is a setting of the whole process, so the library never makes it on import: the commands do,
before they decode (forked workers inherit it). A user's own glibc settings win: with any
``MALLOC_*_`` variable or a malloc tunable in ``GLIBC_TUNABLES`` set, nothing is changed. Other C
libraries (musl, macOS) have no such setting; there it does nothing.
"""
from __future__ import annotations

import ctypes
import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager

# Arrays above this are still mapped on their own and returned when freed (glibc's own upper
# bound for its dynamic threshold, 32 MiB on 64-bit systems): only the large inputs (a batch's
# concatenated emissions) are that size, once per batch.
HEAP_MMAP_THRESHOLD_BYTES = 32 * 2**20
# Freed memory up to this much is kept at the top of the heap for the next batch; above it the
# heap is trimmed as before (a bound, should a process free far more than it will reuse).
HEAP_TRIM_THRESHOLD_BYTES = 2**30

# mallopt's parameter numbers (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def user_malloc_settings() -> list[str]:
    """The environment variables through which the user already tunes glibc's malloc."""
    named = [k for k in os.environ if k.startswith("MALLOC_") and k.endswith("_")]
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        named.append("GLIBC_TUNABLES")
    return sorted(named)


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed heap memory (module docstring). True when the settings
    were made; False where the user set their own, or the C library has no ``mallopt``."""
    if user_malloc_settings():
        return False
    try:
        libc = ctypes.CDLL(None)
    except OSError:  # pragma: no cover - no C library symbols to look up
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:  # not glibc (macOS)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # both, or glibc keeps adjusting one of them (setting either fixes the other at its default)
    return bool(mallopt(_M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, HEAP_TRIM_THRESHOLD_BYTES))


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for a stretch of code that makes many container
    objects and no reference cycles (reference counting still frees everything at once; what
    the collector would have found, it finds at its next run). Each allocation counts towards
    a collection that rescans the objects still young, and every tenth towards one of the whole
    process: parsing an ARPA made millions of lists (6x slower parsing), and a beam batch's
    results make ~20 word objects per utterance (38-44 ms of collections in a 1.2 s pass over
    a test-clean-sized corpus, 8-12 ms paused).
    A collector the caller had disabled stays disabled."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
