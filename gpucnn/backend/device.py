"""The one place above the kernels that knows CuPy: the device module, array checks, helpers.

Code outside :mod:`gpucnn.backend` never imports ``cupy``; it asks here. With
``GPUCNN_SIMULATE_CUDA=1`` the device module is the simulated CUDA device of
:mod:`gpucnn.testing.simcuda` (a CuPy stand-in with its own array type, our kernels run
through the host emulator), so every ``cuda`` code path meets a non-NumPy array type on a
machine without a GPU.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import numpy as np

__all__ = [
    "simulated",
    "cupy_module",
    "cupyx_module",
    "is_device_array",
    "is_array",
    "array_module",
    "scatter_add",
    "empty_pinned",
]


def simulated() -> bool:
    """Whether ``GPUCNN_SIMULATE_CUDA=1``: the cuda backend runs on the simulated device."""
    return os.environ.get("GPUCNN_SIMULATE_CUDA", "").strip() in ("1", "true", "True", "yes")


def cupy_module() -> ModuleType:
    """``cupy``, or the simulated device's stand-in when :func:`simulated` (imports either)."""
    if simulated():
        from gpucnn.testing import simcuda

        return simcuda
    import cupy

    return cupy


def cupyx_module() -> ModuleType:
    """``cupyx``, or the stand-in's ``cupyx`` namespace when :func:`simulated`."""
    if simulated():
        from gpucnn.testing import simcuda

        return simcuda.cupyx
    import cupyx

    return cupyx


def is_device_array(a: Any) -> bool:
    """Whether ``a`` is a device array: a ``cupy.ndarray`` or the simulated device's array."""
    t = type(a)
    return t.__module__.startswith("cupy") or getattr(t, "__gpucnn_device_array__", False)


def is_array(a: Any) -> bool:
    """Whether ``a`` is an array of either backend (NumPy ``ndarray`` or device array)."""
    return isinstance(a, np.ndarray) or is_device_array(a)


def array_module(a: Any) -> ModuleType:
    """``numpy`` for host arrays and scalars, the device module for device arrays."""
    return cupy_module() if is_device_array(a) else np


def scatter_add(out: Any, index: Any, values: Any) -> None:
    """``out[index] += values`` with repeated indices accumulated (``np.add.at`` on the host)."""
    if is_device_array(out):
        cupyx_module().scatter_add(out, index, values)
    else:
        np.add.at(out, index, values)


def empty_pinned(shape: tuple, dtype: Any) -> np.ndarray:
    """A page-locked host array (``cupyx.empty_pinned``) for asynchronous uploads."""
    return cupyx_module().empty_pinned(shape, dtype=dtype)
