"""CPU thread control for the NumPy backend's BLAS (OpenBLAS bundled with NumPy wheels).

The NumPy backend's GEMMs are small-to-medium; OpenBLAS's spinning worker threads gain little
there and slow everything down badly when the cores are shared (another process, or gpucnn's
own data-loader prefetch thread). ``set_num_threads(1)`` is the safe choice on a 2-core
machine; ``OPENBLAS_NUM_THREADS`` set before NumPy loads does the same.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

import numpy as np

__all__ = ["set_num_threads", "get_num_threads", "blas_core", "blas_core_text"]

_SETTERS = (
    "scipy_openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
)
_GETTERS = tuple(s.replace("set_", "get_") for s in _SETTERS)


def _blas_libraries() -> list[ctypes.CDLL]:
    paths = sorted((Path(np.__file__).resolve().parent.parent / "numpy.libs").glob("*openblas*"))
    sys_lib = ctypes.util.find_library("openblas")
    if sys_lib:
        paths.append(Path(sys_lib))
    libs = []
    for p in paths:
        try:
            libs.append(ctypes.CDLL(str(p)))
        except OSError:
            continue
    return libs


def set_num_threads(n: int) -> bool:
    """Limit NumPy's OpenBLAS to ``n`` threads (best effort); True if a library took it."""
    if int(n) < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    for lib in _blas_libraries():
        for name in _SETTERS:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn(ctypes.c_int(int(n)))
                return True
    return False


def get_num_threads() -> int | None:
    """Threads NumPy's OpenBLAS uses now, or None when it cannot be read."""
    for lib in _blas_libraries():
        for name in _GETTERS:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype = ctypes.c_int
                return int(fn())
    return None


_CORENAMES = (
    "scipy_openblas_get_corename64_",
    "scipy_openblas_get_corename",
    "openblas_get_corename64_",
    "openblas_get_corename",
)


def blas_core() -> str | None:
    """The kernel set NumPy's OpenBLAS runs (e.g. ``"Haswell"``: AVX2, ``"SkylakeX"``: AVX-512),
    chosen when it loaded, or forced by ``OPENBLAS_CORETYPE``; None when it cannot be read."""
    for lib in _blas_libraries():
        for name in _CORENAMES:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                value = fn()
                return value.decode() if value else None
    return None


def blas_core_text() -> str:
    """``blas_core()`` and how it was chosen, e.g. ``"Haswell (forced by
    OPENBLAS_CORETYPE=Haswell)"``, for reports."""
    forced = os.environ.get("OPENBLAS_CORETYPE")
    how = f"forced by OPENBLAS_CORETYPE={forced}" if forced else "detected by OpenBLAS"
    return f"{blas_core() or 'unknown'} ({how})"
