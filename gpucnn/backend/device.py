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
    "current_device_id",
    "compute_capability",
    "device_count",
    "use_device",
    "new_stream",
    "new_event",
    "record_event",
    "wait_event",
    "upload_async",
    "take",
    "device_rng",
    "device_version",
    "device_report",
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


# ------------------------------------------------------------------ devices, streams, uploads


def current_device_id() -> int:
    """The id of the calling thread's current CUDA device."""
    return int(cupy_module().cuda.Device().id)


def compute_capability() -> tuple[int, int]:
    """The compute capability ``(major, minor)`` of the current CUDA device (the simulated
    device reports its own)."""
    cc = str(cupy_module().cuda.Device().compute_capability)
    return int(cc[:-1]), int(cc[-1])


def device_count() -> int:
    """How many CUDA devices this process sees."""
    return int(cupy_module().cuda.runtime.getDeviceCount())


def use_device(device_id: int) -> None:
    """Make ``device_id`` the calling thread's current CUDA device."""
    cupy_module().cuda.Device(device_id).use()


def new_stream() -> Any:
    """A new non-blocking CUDA stream (it does not synchronise with the legacy default)."""
    return cupy_module().cuda.Stream(non_blocking=True)


def new_event() -> Any:
    """A new CUDA event without timing (cheap to record and query: ``.done``, ``.record``)."""
    return cupy_module().cuda.Event(disable_timing=True)


def record_event() -> Any:
    """An event recorded now on the calling thread's current stream: everything queued there
    so far precedes it."""
    return cupy_module().cuda.get_current_stream().record()


def wait_event(event: Any) -> None:
    """Make the calling thread's current stream wait for ``event`` (no host synchronisation)."""
    cupy_module().cuda.get_current_stream().wait_event(event)


def upload_async(host: np.ndarray, stream: Any) -> Any:
    """A new device array holding ``host`` (C-contiguous, ideally pinned: see
    :func:`empty_pinned`), copied asynchronously on ``stream``; ``host`` must stay unchanged
    until the copy completes (record an event on ``stream`` after this call)."""
    out = cupy_module().empty(host.shape, dtype=host.dtype)
    out.set(host, stream=stream)
    return out


def take(a: Any, index: np.ndarray) -> Any:
    """``a[index]`` for a device array ``a`` and host integer ``index`` (uploaded first)."""
    return a[cupy_module().asarray(index)]


def device_rng(seed: int | None) -> Any:
    """A device random ``Generator`` (``cupy.random.default_rng(seed)``)."""
    return cupy_module().random.default_rng(seed)


def device_version() -> str:
    """The device module's version (CuPy's, or the simulated stand-in's); raises
    ``ImportError`` when CuPy is not installed."""
    return str(cupy_module().__version__)


def device_report() -> list[str]:
    """Lines describing the CUDA runtime, driver and devices (for ``gpucnn info``); raises
    whatever the runtime raises when no device answers."""
    cp = cupy_module()
    rt = cp.cuda.runtime
    lines = [f"cuda runtime: {rt.runtimeGetVersion()} | driver: {rt.driverGetVersion()}"]
    for i in range(rt.getDeviceCount()):
        props = rt.getDeviceProperties(i)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        with cp.cuda.Device(i):
            free, total = rt.memGetInfo()
        lines.append(
            f"device {i}: {name}, compute capability {props['major']}.{props['minor']}, "
            f"memory {total / 2**30:.1f} GiB ({free / 2**30:.1f} GiB free)"
        )
    return lines
