"""Keep a long-running server's resident memory flat.

Gradio runs handlers on a pool of threads, and glibc gives each thread that contends for the heap its own
malloc arena (up to 8 per core); memory freed in one arena is not reused by another, so RSS creeps up with
every new thread a request lands on. Capping the arenas, as ``MALLOC_ARENA_MAX=2`` would, stops the creep
(``bench/load_test.py`` measures it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_ARENA_MAX = -8  # from glibc's malloc.h


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas; call before the server starts its threads. An explicit
    ``MALLOC_ARENA_MAX`` in the environment wins. Returns whether a cap is in force; False off glibc."""
    if not sys.platform.startswith("linux"):
        return False
    if "MALLOC_ARENA_MAX" in os.environ:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False


def release_freed_memory() -> None:
    """Collect garbage and hand the heap pages it freed back to the system (``malloc_trim``): glibc keeps them
    otherwise, so dropping a model (the PyTorch one, after a background ONNX export) would not lower RSS."""
    import gc

    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # no glibc
            pass
