"""A simulated CUDA device: a CuPy stand-in whose kernels run through the host emulator.

``GPUCNN_SIMULATE_CUDA=1`` makes :func:`gpucnn.backend.device.cupy_module` return this module,
so the ``cuda`` backend, and everything above it, runs here on a machine without a GPU. It is
CuPy's API surface as gpucnn uses it (``tests/test_simcuda.py`` checks every name and keyword
against the installed CuPy 14), with CuPy's strictness:

* its own array type (:class:`ndarray`): ``np.asarray(device_array)`` raises ``TypeError``; a
  NumPy array inside a device operation raises ``TypeError``; full reductions and element
  reads return 0-d device arrays;
* kernels (``RawModule``/``RawKernel``) are our ``cuda/*.cu`` compiled by the host emulator
  (optionally by the real NVRTC first: ``GPUCNN_SIMULATE_NVRTC=1``); arguments must be device
  arrays or NumPy scalars of the C width;
* it counts host synchronisations, device allocations (pool misses), host<->device copies,
  our kernel launches, CuPy's own kernels and cuBLAS calls, each with its call site
  (:func:`counters`, :func:`counting`);
* stream capture: between ``stream.begin_capture()`` and ``end_capture()`` nothing runs; it
  refuses what CUDA and CuPy refuse (cuBLAS through CuPy, synchronisation, host reads,
  pageable copies, allocations the pool cannot serve) and ``Graph.launch()`` replays the
  recorded kernels and copies;
* threads, as CuPy: the current stream and device are per thread; the memory pool keeps an
  arena of free blocks per stream (a block freed goes back to the arena of the stream it was
  allocated on, so a worker thread's uploads on its own stream never change what the main
  stream's allocations find); every event is attributed to its thread and stream
  (``counters(thread="current")``, ``counting(thread="current")``, :func:`by_thread`); a
  capture is its stream's and its thread's only. One lock guards the shared state.

It cannot show real asynchrony, races inside a warp, FMA/denormal numerics or speed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np

from gpucnn.testing.simcuda import _cuda as cuda
from gpucnn.testing.simcuda import _state
from gpucnn.testing.simcuda._array import _gemm, _op, _poison, ndarray
from gpucnn.testing.simcuda._cuda import RawKernel, RawModule
from gpucnn.testing.simcuda._state import (
    Counters,
    SimulatedDeviceError,
    StreamCaptureError,
)
from gpucnn.testing.simcuda._surface import check_keywords

__version__ = "14.0.0+gpucnn.simulated"

# dtypes and constants: NumPy's objects, as CuPy re-exports them
for _name in (
    "float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
    "uint32", "uint64", "bool_", "complex64", "complex128", "intp", "dtype", "newaxis", "pi",
    "e", "inf", "nan", "finfo", "iinfo", "promote_types",
    "issubdtype", "integer", "floating", "number", "signedinteger", "unsignedinteger",
    "generic",
):  # fmt: skip
    globals()[_name] = getattr(np, _name)


def _host_to_device(a: Any, dtype: Any = None, copy: bool = True) -> ndarray:
    _state.refuse_in_capture("a host->device copy from pageable memory (cudaMemcpy)")
    arr = np.array(a, dtype=dtype, copy=True)
    if arr.dtype == object:
        raise ValueError("Unsupported dtype object")
    _state.count("h2d")
    out = ndarray.__new__(ndarray)
    out._a, out._mem = arr, _state.Block(arr.nbytes)
    return out


def asarray(a: Any, dtype: Any = None, order: Any = None, *, blocking: bool = False) -> ndarray:
    """``a`` on the device: no copy for a device array of ``dtype``; host data is copied up."""
    if isinstance(a, ndarray):
        if dtype is None or np.dtype(dtype) == a.dtype:
            return a
        return a.astype(dtype)
    return _host_to_device(a, dtype)


def array(obj: Any, dtype: Any = None, copy: bool = True, order: str = "K", subok: bool = False,
          ndmin: int = 0, *, blocking: bool = False) -> ndarray:
    """A device copy of ``obj`` (host data is copied up)."""
    if isinstance(obj, ndarray):
        if not copy and (dtype is None or np.dtype(dtype) == obj.dtype):
            return obj
        return _op(lambda a: np.array(a, dtype=dtype, copy=True, order=order, ndmin=ndmin),
                   (obj,), {}, "array")
    out = _host_to_device(obj, dtype)
    if ndmin > out.ndim:
        out = out.reshape((1,) * (ndmin - out.ndim) + out.shape)
    return out


def asnumpy(a: Any, stream: Any = None, order: str = "C", out: Any = None,
            blocking: bool = True) -> np.ndarray:
    """A host copy of a device array (host arrays are returned as they are)."""
    if isinstance(a, ndarray):
        return a.get(stream=stream, order=order, out=out, blocking=blocking)
    return np.asarray(a, order=order)


def ascontiguousarray(a: Any, dtype: Any = None) -> ndarray:
    """``a`` C-contiguous (a copy kernel only when it is not already)."""
    if not isinstance(a, ndarray):
        raise TypeError(f"Argument 'a' has incorrect type (expected cupy.ndarray, got "
                        f"{type(a).__name__})")
    if a.flags.c_contiguous and (dtype is None or np.dtype(dtype) == a.dtype):
        return a
    return _op(lambda x: np.ascontiguousarray(x, dtype=dtype), (a,), {}, "ascontiguousarray")


def _dt(a: Any) -> Any:
    return a.dtype if isinstance(a, ndarray) else a


def result_type(*arrays_and_dtypes: Any) -> np.dtype:
    """NumPy's promotion over the dtypes of device arrays and dtypes (no data read)."""
    return np.result_type(*(_dt(a) for a in arrays_and_dtypes))


def can_cast(from_: Any, to: Any, casting: str = "safe") -> bool:
    """Whether ``from_`` (a dtype or an array's dtype) casts to ``to`` under ``casting``."""
    return bool(np.can_cast(_dt(from_), to, casting))


def ndim(a: Any) -> int:
    """Number of dimensions."""
    return a.ndim if isinstance(a, ndarray) else int(np.ndim(a))


def shape(a: Any) -> tuple:
    """The shape."""
    return a.shape if isinstance(a, ndarray) else tuple(np.shape(a))


def size(a: Any, axis: int | None = None) -> int:
    """Number of elements (along ``axis``)."""
    if isinstance(a, ndarray):
        return a.size if axis is None else a.shape[axis]
    return int(np.size(a, axis))


def get_array_module(*args: Any) -> Any:
    """This module if any argument is a device array, else NumPy."""
    import builtins
    import sys

    # (this module's ``any`` is CuPy's array function, not the builtin)
    return sys.modules[__name__] if builtins.any(isinstance(a, ndarray) for a in args) else np


def _creation(name: str, shape_first: bool = True) -> Any:
    npf = getattr(np, name)

    def f(*args: Any, **kwargs: Any) -> ndarray:
        check_keywords("", name, kwargs)
        for a in (*args, *kwargs.values()):
            if isinstance(a, np.ndarray):
                raise TypeError(f"cupy.{name}: " + "Unsupported type <class 'numpy.ndarray'>")
        r = np.asarray(npf(*(x._a if isinstance(x, ndarray) else x for x in args), **kwargs))
        if name.startswith("empty"):
            _poison(r)  # uninitialised device memory (a reused pool block holds stale data)
        else:
            _state.count("cupy_kernels")
        out = ndarray.__new__(ndarray)
        out._a, out._mem = r, _state.Block(r.nbytes)
        if _state.capturing() and not name.startswith("empty"):
            fresh, args_, kw_ = r, args, kwargs
            ua = tuple(x._a if isinstance(x, ndarray) else x for x in args_)
            _state.record_node(lambda: np.copyto(fresh, npf(*ua, **kw_)), name)
            _poison(r)
        return out

    f.__name__ = name
    f.__doc__ = f"``cupy.{name}`` on the simulated device."
    f.__wrapped__ = npf  # type: ignore[attr-defined]
    return f


CREATION = ("zeros", "ones", "empty", "full", "zeros_like", "ones_like", "empty_like",
            "full_like", "arange", "linspace", "eye", "identity")
for _name in CREATION:
    globals()[_name] = _creation(_name)


def _func(name: str) -> Any:
    npf = getattr(np, name)

    def f(*args: Any, **kwargs: Any) -> Any:
        check_keywords("", name, kwargs)
        return _op(npf, args, kwargs, name)

    f.__name__ = name
    f.__doc__ = f"``cupy.{name}`` on the simulated device."
    f.__wrapped__ = npf  # type: ignore[attr-defined]
    return f


# CuPy functions wrapped as NumPy's (tests/test_simcuda.py checks each exists in CuPy 14).
FUNCTIONS = (
    # elementwise
    "add", "subtract", "multiply", "divide", "true_divide", "floor_divide", "remainder", "mod",
    "power", "negative", "positive", "abs", "absolute", "sign", "exp", "exp2", "expm1", "log",
    "log2", "log10", "log1p", "sqrt", "square", "cbrt", "reciprocal", "sin", "cos", "tan",
    "arcsin", "arccos", "arctan", "arctan2", "sinh", "cosh", "tanh", "floor", "ceil", "trunc",
    "rint", "round", "around", "maximum", "minimum", "fmax", "fmin", "clip", "where",
    "isnan", "isinf", "isfinite", "logical_and", "logical_or", "logical_not", "logical_xor",
    "greater", "greater_equal", "less", "less_equal", "equal", "not_equal", "bitwise_and",
    "bitwise_or", "bitwise_xor", "invert", "left_shift", "right_shift", "copysign", "hypot",
    "nan_to_num", "signbit", "heaviside",
    # reductions
    "sum", "mean", "max", "min", "amax", "amin", "argmax", "argmin", "any", "all", "prod",
    "std", "var", "cumsum", "cumprod", "count_nonzero", "nansum", "nanmax", "nanmin",
    "allclose", "isclose", "array_equal", "median", "average",
    # shape and copies
    "reshape", "transpose", "swapaxes", "moveaxis", "concatenate", "stack", "vstack",
    "hstack", "split", "array_split", "expand_dims", "squeeze", "broadcast_to",
    "broadcast_arrays", "flip", "fliplr", "flipud", "rot90", "roll", "pad", "tile", "repeat",
    "take", "take_along_axis", "put_along_axis", "argpartition", "argsort", "sort",
    "partition", "diag", "tril", "triu", "ravel", "copyto", "outer", "searchsorted",
    "atleast_1d", "atleast_2d", "atleast_3d", "copy", "meshgrid", "bincount", "cumsum",
    "diff", "interp", "lexsort", "histogram",
)  # fmt: skip
for _name in FUNCTIONS:
    globals()[_name] = _func(_name)

# Data-dependent output shapes: CuPy reads a count back to the host first.
SYNC_FUNCTIONS = ("nonzero", "flatnonzero", "argwhere", "unique", "compress", "extract")


def _sync_func(name: str) -> Any:
    npf = getattr(np, name)

    def f(*args: Any, **kwargs: Any) -> Any:
        check_keywords("", name, kwargs)
        _state.host_sync(f"cupy.{name} (a data-dependent output shape)")
        return _op(npf, args, kwargs, name)

    f.__name__ = name
    f.__doc__ = f"``cupy.{name}`` on the simulated device (synchronises)."
    f.__wrapped__ = npf  # type: ignore[attr-defined]
    return f


for _name in SYNC_FUNCTIONS:
    globals()[_name] = _sync_func(_name)


def _gemm_func(name: str) -> Any:
    npf = getattr(np, name)

    def f(*args: Any, **kwargs: Any) -> Any:
        check_keywords("", name, kwargs)
        return _gemm(npf, args, kwargs, name)

    f.__name__ = name
    f.__doc__ = f"``cupy.{name}`` (cuBLAS) on the simulated device."
    f.__wrapped__ = npf  # type: ignore[attr-defined]
    return f


GEMM_FUNCTIONS = ("matmul", "dot", "tensordot", "einsum", "inner", "vdot")
for _name in GEMM_FUNCTIONS:
    globals()[_name] = _gemm_func(_name)


def _where(condition: Any, x: Any = None, y: Any = None) -> Any:
    if x is None and y is None:
        return nonzero(condition)  # type: ignore[name-defined]  # noqa: F821
    return _op(np.where, (condition, x, y), {}, "where")


where = _where  # noqa: F811
where.__name__ = "where"


# --------------------------------------------------------------------------- random


class Generator:
    """``cupy.random.Generator`` (a NumPy PCG64 stream underneath: other numbers than CuPy's)."""

    def __init__(self, bit_generator: Any = None) -> None:
        seed = bit_generator if not isinstance(bit_generator, np.random.Generator) else None
        self._g = np.random.default_rng(seed)

    def _out(self, arr: np.ndarray) -> ndarray:
        _state.refuse_in_capture("random generation through CuPy's host-seeded generator")
        _state.count("cupy_kernels")
        out = ndarray.__new__(ndarray)
        a = np.asarray(arr)
        out._a, out._mem = a, _state.Block(a.nbytes)
        return out

    def random(self, size: Any = None, dtype: Any = np.float64, out: Any = None) -> ndarray:
        """Uniform [0, 1)."""
        return self._out(self._g.random(size, dtype=dtype))

    def standard_normal(self, size: Any = None, dtype: Any = np.float64,
                        out: Any = None) -> ndarray:
        """Standard normal samples."""
        return self._out(self._g.standard_normal(size, dtype=dtype))

    def integers(self, low: Any, high: Any = None, size: Any = None, dtype: Any = np.int64,
                 endpoint: bool = False) -> ndarray:
        """Integers in [low, high) (``endpoint``: [low, high])."""
        return self._out(self._g.integers(low, high, size, dtype=dtype, endpoint=endpoint))

    def uniform(self, low: float = 0.0, high: float = 1.0, size: Any = None,
                dtype: Any = np.float64) -> ndarray:
        """Uniform [low, high)."""
        return self._out(self._g.uniform(low, high, size).astype(dtype, copy=False))

    def standard_exponential(self, size: Any = None, dtype: Any = np.float64,
                             method: str = "inv", out: Any = None) -> ndarray:
        """Exponential samples with scale 1."""
        return self._out(self._g.standard_exponential(size, dtype=dtype))


def default_rng(seed: Any = None) -> Generator:
    """A :class:`Generator` seeded with ``seed``."""
    return Generator(seed)


random = SimpleNamespace(default_rng=default_rng, Generator=Generator)


# --------------------------------------------------------------------------- cupyx


def _scatter_add(a: ndarray, slices: Any, value: Any) -> None:
    """``a[slices] += value`` with repeated indices accumulated (``cupyx.scatter_add``)."""
    from gpucnn.testing.simcuda._array import _index_key

    key = _index_key(slices)

    def add_at(x: np.ndarray, k: Any, v: Any) -> None:
        np.add.at(x, k, v)

    _op(add_at, (a, key, value), {}, "setitem", inplace=True)


def _empty_pinned(shape: Any, dtype: Any = float, order: str = "C") -> np.ndarray:
    """A host array standing for page-locked memory."""
    return np.empty(shape, dtype=dtype, order=order)


def _zeros_pinned(shape: Any, dtype: Any = float, order: str = "C") -> np.ndarray:
    """A zeroed host array standing for page-locked memory."""
    return np.zeros(shape, dtype=dtype, order=order)


cupyx = SimpleNamespace(
    scatter_add=_scatter_add, empty_pinned=_empty_pinned, zeros_pinned=_zeros_pinned
)


# --------------------------------------------------------------------------- memory pools


def get_default_memory_pool() -> _state.MemoryPool:
    """The device memory pool."""
    return _state.POOL


def get_default_pinned_memory_pool() -> _state.PinnedMemoryPool:
    """The pinned host memory pool."""
    return _state.PINNED_POOL


# --------------------------------------------------------------------------- counters


def counters(thread: Any = None, stream: Any = None) -> Counters:
    """The live counters (see :class:`~gpucnn.testing.simcuda._state.Counters`): of every
    thread and stream by default; ``thread="current"`` (or ``"main"``, or a
    ``threading.Thread``): only the events that thread caused; ``stream=`` (a
    ``cuda.Stream`` or ``"current"``): only those issued on that stream; both: those of the
    thread on the stream."""
    return _state.counters(thread, stream)


def by_thread() -> dict[str, Counters]:
    """The live counters of each thread that caused events since the last reset, by name
    (e.g. ``"MainThread"``, ``"gpucnn-dataloader"``)."""
    return _state.by_thread()


def totals() -> dict[str, int]:
    """Counts since the process started (:func:`reset_counters` does not touch them)."""
    return dict(_state.TOTALS)


def reset_counters() -> None:
    """Zero every counter."""
    _state.reset()


@contextlib.contextmanager
def counting(thread: Any = None, stream: Any = None) -> Iterator[Counters]:
    """Count the events inside the ``with`` block: ``with counting() as c: ...; c.syncs``.

    Resets every counter first; ``thread=``/``stream=`` select as :func:`counters` does
    (``counting(thread="current")``: this thread's events only, not a worker thread's)."""
    _state.reset()
    c = _state.counters(thread, stream)
    yield c


def capturing() -> bool:
    """Whether the calling thread's work is being captured (it began a capture, or its
    current stream is being captured)."""
    return _state.capturing()


__all__ = [
    "ndarray", "RawKernel", "RawModule", "cuda", "random", "cupyx", "asarray", "array",
    "asnumpy", "ascontiguousarray", "get_array_module", "counters", "reset_counters",
    "counting", "capturing", "by_thread", "totals", "StreamCaptureError", "SimulatedDeviceError",
    "get_default_memory_pool", "get_default_pinned_memory_pool",
]  # fmt: skip


def copyto(dst: ndarray, src: Any, casting: str = "same_kind", where: Any = True) -> None:
    """``dst[...] = src`` (broadcast), in place on the device."""
    if not isinstance(dst, ndarray):
        raise TypeError(f"copyto: dst must be a device array, got {type(dst).__name__}")

    def cp(d: np.ndarray, s: Any, w: Any) -> None:
        np.copyto(d, s, casting=casting, where=w)

    _op(cp, (dst, src, where), {}, "copyto", inplace=True)
