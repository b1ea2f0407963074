"""The simulated device array and CuPy's array functions over it.

:class:`ndarray` wraps a NumPy array (the "device memory") and behaves as ``cupy.ndarray``
does where CuPy is stricter than NumPy: implicit conversion to NumPy raises ``TypeError``, a
NumPy array inside a device operation raises ``TypeError``, full reductions and element reads
give 0-d device arrays, and every host read of device data (``get``, ``item``, ``float``,
``bool``, ``repr``, boolean-mask indexing, ...) is a counted synchronisation. Every function
and method goes through :func:`_op`, which counts CuPy kernels and cuBLAS calls, accounts
allocations in the memory pool, and, during stream capture, records a replayable node
instead of touching existing memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from gpucnn.testing.simcuda import _state as S
from gpucnn.testing.simcuda._surface import check_keywords

_NUMPY_MSG = (
    "Unsupported type <class 'numpy.ndarray'>: a NumPy array cannot take part in a device "
    "operation (move it with cupy.asarray first)"
)
_IMPLICIT_MSG = (
    "Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a "
    "NumPy array explicitly."
)


def _root(a: np.ndarray) -> Any:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a if a.base is None else a.base


def _poison(a: np.ndarray) -> None:
    """Fill ``a`` as uninitialised device memory might be: NaN floats, a byte pattern else."""
    if a.size == 0 or not a.flags.writeable:
        return
    if a.dtype.kind in "fc":
        a.fill(np.nan)
    elif a.dtype.kind == "b":
        a.fill(True)
    elif a.flags.c_contiguous:
        a.reshape(-1).view(np.uint8).fill(0xA5)
    else:
        a.fill(-91 if a.dtype.kind == "i" else 165)


class ndarray:  # noqa: N801 - CuPy's name
    """A simulated ``cupy.ndarray``: device memory (a NumPy array) plus CuPy's rules."""

    __gpucnn_device_array__ = True
    __slots__ = ("_a", "_mem", "__weakref__")
    __array_priority__ = 100
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, shape: Any, dtype: Any = float, memptr: Any = None, strides: Any = None,
                 order: str = "C") -> None:
        if memptr is not None or strides is not None:
            raise S.SimulatedDeviceError("ndarray(memptr=, strides=) is not simulated")
        a = np.empty(shape, dtype=dtype, order=order)
        _poison(a)
        self._a = a
        self._mem = S.Block(a.nbytes)

    # -- attributes
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    device = property(lambda self: _device())
    T = property(lambda self: _op(np.transpose, (self,), {}, "transpose"))
    mT = property(lambda self: _op(lambda a: a.mT, (self,), {}, "mT"))
    real = property(lambda self: _op(np.real, (self,), {}, "real"))
    imag = property(lambda self: _op(np.imag, (self,), {}, "imag"))

    @property
    def base(self) -> Any:
        """Not tracked: always ``None`` (CuPy gives the owning array of a view)."""
        return None

    @property
    def data(self) -> Any:
        raise S.SimulatedDeviceError("device pointers (ndarray.data) are not simulated")

    def __len__(self) -> int:
        return len(self._a)

    # -- host reads: each a synchronisation and a device->host copy
    def get(self, stream: Any = None, order: str = "C", out: Any = None,
            blocking: bool = True) -> np.ndarray:
        """A host copy (``cudaMemcpy`` device->host; waits for the device when ``blocking``)."""
        if blocking:
            S.host_sync("ndarray.get()", stream)
        else:
            S.refuse_in_capture("ndarray.get()", stream)
        S.count("d2h", stream=stream)
        if out is not None:
            if not isinstance(out, np.ndarray) or out.shape != self.shape:
                raise ValueError("ndarray.get(out=): out must be a NumPy array of the same shape")
            np.copyto(out, self._a)
            return out
        return np.array(self._a, order=order, copy=True)

    def _read(self, what: str) -> np.ndarray:
        S.host_sync(what)
        S.count("d2h")
        return self._a

    def item(self, *args: Any) -> Any:
        """One element as a Python scalar (a host read)."""
        return self._read("ndarray.item()").item(*args)

    def tolist(self) -> Any:
        """As nested Python lists (a host read)."""
        return self._read("ndarray.tolist()").tolist()

    def __float__(self) -> float:
        return float(self._read("float(ndarray)"))

    def __int__(self) -> int:
        return int(self._read("int(ndarray)"))

    def __complex__(self) -> complex:
        return complex(self._read("complex(ndarray)"))

    def __bool__(self) -> bool:
        return bool(self._read("bool(ndarray)"))

    def __index__(self) -> int:
        if self.ndim != 0 or self.dtype.kind not in "iu":
            raise TypeError("only integer scalar arrays can be converted to a scalar index")
        return int(self._read("operator.index(ndarray)"))

    def __repr__(self) -> str:
        return repr(self._read("repr(ndarray)")).replace("array(", "array(", 1)

    def __str__(self) -> str:
        return str(self._read("str(ndarray)"))

    def __format__(self, spec: str) -> str:
        return format(self._read("format(ndarray)") if self.ndim else self.item(), spec)

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(_IMPLICIT_MSG)

    def __iter__(self) -> Any:
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self)))

    def __reduce__(self) -> Any:
        return (_from_host, (self.get(),))

    # -- NumPy protocols: device arrays only; NumPy arrays raise as in CuPy
    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        if method == "__call__":
            return _op(ufunc, inputs, kwargs, ufunc.__name__)
        if method == "reduce":
            return _op(ufunc.reduce, inputs, kwargs, f"{ufunc.__name__}.reduce")
        raise TypeError(f"the simulated device (like CuPy) has no ufunc method {method!r}")

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        from gpucnn.testing import simcuda

        impl = getattr(simcuda, func.__name__, None)
        if impl is None or not callable(impl) or impl is func:
            raise TypeError(f"numpy.{func.__name__} has no implementation for device arrays")
        return impl(*args, **kwargs)

    # -- indexing
    def __getitem__(self, key: Any) -> Any:
        key = _index_key(key)
        return _op(lambda a, k: a[k], (self, key), {}, "getitem")

    def __setitem__(self, key: Any, value: Any) -> None:
        key = _index_key(key)

        def setitem(a: np.ndarray, k: Any, v: Any) -> None:
            a[k] = v

        _op(setitem, (self, key, value), {}, "setitem", inplace=True)

    # -- methods
    def set(self, arr: Any, stream: Any = None) -> None:
        """Copy host array ``arr`` (same shape and dtype) into this array (host->device)."""
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"ndarray.set() takes a NumPy array, got {type(arr).__name__}")
        if arr.dtype != self.dtype:
            raise TypeError(f"{arr.dtype} array cannot be set to {self.dtype} array")
        if arr.shape != self.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self.shape}, new shape: {arr.shape}")
        if not self.flags.c_contiguous:
            raise RuntimeError("Cannot set to non-contiguous array")
        S.count("h2d", stream=stream)
        dst = self._a
        if S.capturing() or S.stream_capturing(stream):
            S.record_node(lambda: np.copyto(dst, arr), "memcpy h2d")
        else:
            np.copyto(dst, arr)

    def astype(self, dtype: Any, order: str = "K", casting: Any = None, subok: Any = None,
               copy: bool = True) -> ndarray:
        """A copy in ``dtype`` (``self`` when ``copy=False`` and nothing changes)."""
        if not copy and np.dtype(dtype) == self.dtype:
            return self
        kw = {} if casting is None else {"casting": casting}
        return _op(lambda a: a.astype(dtype, order=order, copy=True, **kw), (self,), {}, "astype")

    def fill(self, value: Any) -> None:
        """Set every element to ``value`` (a scalar)."""
        if isinstance(value, (np.ndarray, ndarray)) and np.ndim(_unwrap(value)) > 0:
            raise ValueError("fill() takes a scalar")
        _op(lambda a, v: a.fill(v), (self, value), {}, "fill", inplace=True)

    def __abs__(self) -> ndarray:
        return _op(np.abs, (self,), {}, "abs")

    def __neg__(self) -> ndarray:
        return _op(np.negative, (self,), {}, "negative")

    def __pos__(self) -> ndarray:
        return _op(np.positive, (self,), {}, "positive")

    def __invert__(self) -> ndarray:
        return _op(np.invert, (self,), {}, "invert")

    def __matmul__(self, other: Any) -> ndarray:
        return _gemm(np.matmul, (self, other), {}, "matmul")

    def __rmatmul__(self, other: Any) -> ndarray:
        return _gemm(np.matmul, (other, self), {}, "matmul")

    def dot(self, b: Any, out: Any = None) -> ndarray:
        """``self @ b`` through cuBLAS."""
        return _gemm(np.dot, (self, b), {} if out is None else {"out": out}, "dot")

    def nonzero(self) -> tuple:
        """Indices of non-zero elements (a data-dependent shape: synchronises)."""
        S.host_sync("ndarray.nonzero()")
        return _op(np.nonzero, (self,), {}, "nonzero")


def _method(name: str) -> Callable:
    def m(self: ndarray, *args: Any, **kwargs: Any) -> Any:
        check_keywords("ndarray", name, kwargs)
        return _op(lambda a, *x, **k: getattr(a, name)(*x, **k), (self, *args), kwargs, name)

    m.__name__ = name
    m.__doc__ = f"``cupy.ndarray.{name}`` on the simulated device."
    return m


# Methods of cupy.ndarray wrapped as NumPy's (tests/test_simcuda.py checks each exists in CuPy).
NDARRAY_METHODS = (
    "sum", "mean", "max", "min", "argmax", "argmin", "any", "all", "prod", "std", "var",
    "cumsum", "clip", "round", "copy", "reshape", "transpose", "ravel", "flatten", "view",
    "squeeze", "swapaxes", "take", "repeat", "sort", "argsort", "argpartition", "diagonal",
    "conj", "trace", "partition", "cumprod", "choose", "compress", "put",
)  # fmt: skip
for _n in NDARRAY_METHODS:
    setattr(ndarray, _n, _method(_n))

_BINOPS = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "truediv": np.true_divide,
    "floordiv": np.floor_divide, "mod": np.remainder, "pow": np.power, "and": np.bitwise_and,
    "or": np.bitwise_or, "xor": np.bitwise_xor, "lshift": np.left_shift,
    "rshift": np.right_shift,
}  # fmt: skip
_CMPOPS = {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
           "eq": np.equal, "ne": np.not_equal}


def _install_ops() -> None:
    for name, uf in _BINOPS.items():
        def fwd(self: ndarray, o: Any, uf: Any = uf) -> Any:
            return _op(uf, (self, o), {}, uf.__name__)

        def rev(self: ndarray, o: Any, uf: Any = uf) -> Any:
            return _op(uf, (o, self), {}, uf.__name__)

        def inp(self: ndarray, o: Any, uf: Any = uf) -> Any:
            _op(uf, (self, o), {"out": self}, uf.__name__)
            return self

        setattr(ndarray, f"__{name}__", fwd)
        setattr(ndarray, f"__r{name}__", rev)
        setattr(ndarray, f"__i{name}__", inp)
    for name, uf in _CMPOPS.items():
        def cmp(self: ndarray, o: Any, uf: Any = uf) -> Any:
            if o is None:
                return NotImplemented
            return _op(uf, (self, o), {}, uf.__name__)

        setattr(ndarray, f"__{name}__", cmp)


_install_ops()


# --------------------------------------------------------------------------- the core op


def _device() -> Any:
    from gpucnn.testing.simcuda import _cuda

    return _cuda.Device()


def _from_host(a: np.ndarray) -> ndarray:
    out = ndarray.__new__(ndarray)
    out._a = np.array(a, copy=True)
    out._mem = S.Block(out._a.nbytes)
    return out


def _index_key(key: Any) -> Any:
    """An index with device arrays unwrapped; host index arrays are uploaded (counted)."""
    items = key if isinstance(key, tuple) else (key,)
    out = []
    for k in items:
        if isinstance(k, ndarray):
            if k.dtype == np.bool_:
                S.host_sync("boolean-mask indexing (a data-dependent shape)")
            out.append(k)
        elif isinstance(k, (np.ndarray, list)):
            S.count("h2d")  # CuPy moves host index arrays to the device
            S.refuse_in_capture("indexing with a host array (a host->device copy)")
            arr = np.asarray(k)
            if arr.dtype == np.bool_:
                S.host_sync("boolean-mask indexing (a data-dependent shape)")
            out.append(arr)
        else:
            out.append(k)
    return tuple(out) if isinstance(key, tuple) else out[0]


def _unwrap(x: Any) -> Any:
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray):
        raise TypeError(_NUMPY_MSG)
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(e) for e in x)
    return x


def _unwrap_key(x: Any) -> Any:  # index keys may hold (already uploaded) host arrays
    if isinstance(x, tuple):
        return tuple(e._a if isinstance(e, ndarray) else e for e in x)
    return x._a if isinstance(x, ndarray) else x


def _devices_in(x: Any, acc: list) -> list:
    if isinstance(x, ndarray):
        acc.append(x)
    elif isinstance(x, (list, tuple)):
        for e in x:
            _devices_in(e, acc)
    elif isinstance(x, dict):
        for e in x.values():
            _devices_in(e, acc)
    return acc


def _wrap(r: Any, roots: dict, fresh: list) -> Any:
    """``r`` with arrays wrapped; ``fresh`` gets, per flattened output, its new buffer or None."""
    if isinstance(r, np.ndarray):
        out = ndarray.__new__(ndarray)
        owner = roots.get(id(_root(r)))
        if owner is not None:
            out._a, out._mem = r, owner._mem
            fresh.append(None)
        else:
            out._a, out._mem = r, S.Block(r.nbytes)
            fresh.append(r)
        return out
    if isinstance(r, np.generic):
        a = np.asarray(r)
        fresh.append(a)
        out = ndarray.__new__(ndarray)
        out._a, out._mem = a, S.Block(a.nbytes)
        return out
    if isinstance(r, tuple):
        return tuple(_wrap(e, roots, fresh) for e in r)
    if isinstance(r, list):
        return [_wrap(e, roots, fresh) for e in r]
    return r


def _flat(r: Any, acc: list) -> list:
    """Array-like outputs of ``r`` in :func:`_wrap`'s order."""
    if isinstance(r, (np.ndarray, np.generic)):
        acc.append(r)
    elif isinstance(r, (tuple, list)):
        for e in r:
            _flat(e, acc)
    return acc


def _op(fn: Callable, args: tuple, kwargs: dict, label: str, inplace: bool = False,
        kernel: bool = True) -> Any:
    """Run ``fn`` (a NumPy function) on unwrapped device arguments, as a CuPy kernel would.

    NumPy arrays among the arguments raise ``TypeError``. Outputs that share memory with a
    device input are views of it; other outputs are new arrays from the memory pool. During
    stream capture, work that writes existing memory (``inplace``, ``out=``) is recorded and
    not run; work that makes new arrays runs (to learn the shapes), its outputs are poisoned as
    unrun device memory, and a node that recomputes them in place is recorded.
    """
    devs = _devices_in(args, [])
    _devices_in(kwargs, devs)
    if label == "getitem" or label == "setitem":
        ua = (args[0]._a, _unwrap_key(args[1]), *(_unwrap(a) for a in args[2:]))
    else:
        ua = tuple(_unwrap(a) for a in args)
    uk = {k: _unwrap(v) for k, v in kwargs.items()}
    writes = inplace or uk.get("out") is not None
    if S.capturing() and writes:
        S.record_node(lambda: fn(*ua, **uk), label)
        if kernel:
            S.count("cupy_kernels")
        out = kwargs.get("out")
        return out[0] if isinstance(out, tuple) and len(out) == 1 else out
    if S.capturing():
        with np.errstate(all="ignore"):
            r = fn(*ua, **uk)
    else:
        r = fn(*ua, **uk)
    if writes:
        if kernel:
            S.count("cupy_kernels")
        out = kwargs.get("out")
        return out[0] if isinstance(out, tuple) and len(out) == 1 else out
    roots = {id(_root(d._a)): d for d in devs}
    fresh: list = []
    res = _wrap(r, roots, fresh)
    made = [f for f in fresh if f is not None]
    if made and kernel:
        S.count("cupy_kernels")
    if S.capturing() and made:

        def replay() -> None:
            for t, g in zip(fresh, _flat(fn(*ua, **uk), [])):
                if t is not None:
                    np.copyto(t, g)

        for t in made:
            _poison(t)
        S.record_node(replay, label)
    return res


def _gemm(fn: Callable, args: tuple, kwargs: dict, label: str) -> Any:
    """A cuBLAS call: refused during capture (cupy/cupy#6290), counted otherwise."""
    S.refuse_in_capture(f"cuBLAS ({label} through CuPy)")
    S.count("cublas")
    nd = [np.ndim(a._a) for a in args if isinstance(a, ndarray)]
    if any(n > 2 for n in nd):
        S.count("batched_gemms", site=True)
    return _op(fn, args, kwargs, label, kernel=False)
