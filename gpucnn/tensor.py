"""The autograd tensor: a NumPy or CuPy array with a gradient and a record of its history.

``Tensor.backward()`` visits the graph in reverse topological order and accumulates
gradients with ``+`` (a tensor used twice gets both contributions). An op is a
:class:`Function` with ``forward`` and ``backward`` on raw arrays side by side; ``apply``
unwraps tensors, checks that all inputs live on one backend and records the node.
"""

from __future__ import annotations

import contextlib
import numbers
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from gpucnn import backend as _backend
from gpucnn.backend.device import is_array as _is_array
from gpucnn.backend.device import scatter_add as _scatter_add

__all__ = [
    "Tensor",
    "Parameter",
    "Device",
    "Function",
    "Context",
    "no_grad",
    "enable_grad",
    "is_grad_enabled",
    "tensor",
    "zeros",
    "ones",
    "randn",
    "rand",
    "from_numpy",
    "unbroadcast",
]

_state = threading.local()


def is_grad_enabled() -> bool:
    """Whether operations record history for ``backward`` (off inside :func:`no_grad`)."""
    return getattr(_state, "grad_enabled", True)


@contextlib.contextmanager
def _grad_mode(enabled: bool) -> Iterator[None]:
    prev = is_grad_enabled()
    _state.grad_enabled = enabled
    try:
        yield
    finally:
        _state.grad_enabled = prev


def no_grad() -> contextlib.AbstractContextManager:
    """Context manager: operations inside record no graph (inference, parameter updates)."""
    return _grad_mode(False)


def enable_grad() -> contextlib.AbstractContextManager:
    """Context manager: re-enable graph recording inside a :func:`no_grad` block."""
    return _grad_mode(True)



def _array_backend_name(a: Any) -> str:
    return "numpy" if isinstance(a, (np.ndarray, np.generic)) else "cuda"


def unbroadcast(grad: Any, shape: tuple) -> Any:
    """Sum ``grad`` down to ``shape``: the gradient of a broadcast from ``shape``."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


def _leaf_grad(t: Tensor, g: Any) -> Any:
    """The array that becomes ``t.grad`` when ``t`` has none yet: ``g`` written into the
    Parameter's declared slot :attr:`Parameter._flat_grad` (set by the optimizers' flat
    mechanism, :mod:`gpucnn.optim.flat`) when the slot holds an array matching ``g`` in array
    type, shape and dtype; else a copy of ``g``. Plain Tensors have no slot: always a copy.
    """
    buf = t._flat_grad if isinstance(t, Parameter) else None
    if (
        buf is not None
        and (type(buf) is type(g) or (isinstance(g, np.generic) and isinstance(buf, np.ndarray)))
        and buf.shape == g.shape
        and buf.dtype == g.dtype
    ):
        buf[...] = g  # 0-d NumPy results may arrive as scalars (np.float32): same treatment
        return buf
    return g.copy()


class Context:
    """Per-call scratch space of a :class:`Function`: saved arrays and input-grad flags."""

    __slots__ = ("saved", "needs_input_grad", "__dict__")

    def __init__(self) -> None:
        self.saved: tuple = ()
        self.needs_input_grad: tuple[bool, ...] = ()

    def save_for_backward(self, *arrays: Any) -> None:
        """Keep ``arrays`` for ``backward`` (read back as ``saved_tensors``)."""
        self.saved = arrays

    @property
    def saved_tensors(self) -> tuple:
        return self.saved


class Function:
    """Base class of differentiable ops.

    Subclasses define ``forward(ctx, *args, **kwargs) -> array`` on raw arrays (tensors are
    unwrapped; other arguments pass through) and ``backward(ctx, grad) -> grads``, one
    gradient (array or ``None``) per *tensor* argument, in order.
    """

    @staticmethod
    def forward(ctx: Context, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover
        raise NotImplementedError

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Tensor:
        """Run ``forward`` on unwrapped arguments and record the node when grads are needed."""
        tensors: list[Tensor] = []
        raw: list[Any] = []
        be_name: str | None = None
        for a in args:
            if isinstance(a, Tensor):
                tensors.append(a)
                raw.append(a.data)
                name = _array_backend_name(a.data)
                if be_name is None:
                    be_name = name
                elif name != be_name:
                    raise RuntimeError(
                        f"{cls.__name__}: inputs live on different backends ({be_name} and "
                        f"{name}); move them with .to('{be_name}') first"
                    )
            else:
                raw.append(a)
        ctx = Context()
        needs = tuple(t.requires_grad for t in tensors)
        track = is_grad_enabled() and any(needs)
        ctx.needs_input_grad = needs
        out = cls.forward(ctx, *raw, **kwargs)
        result = Tensor(out, _copy=False)
        if track:
            result.requires_grad = True
            result._node = (cls, ctx, tuple(tensors))
        return result


def _host_array(data: Any) -> np.ndarray:
    """``data`` (nested lists, tuples, scalars) as a NumPy array; a ragged nesting or a value
    that is no number is a ``ValueError`` / ``TypeError`` naming :class:`Tensor`."""
    if data is None:
        raise TypeError("Tensor: data must be an array, a number or a (nested) list, got None")
    try:
        arr = np.asarray(data)
    except ValueError as exc:
        if "inhomogeneous" in str(exc) or "sequence" in str(exc):
            raise ValueError(
                f"Tensor: the nested lists are ragged (rows of different lengths), so they "
                f"do not form an array: {_describe_ragged(data)}"
            ) from None
        raise ValueError(f"Tensor: cannot make an array of {type(data).__name__}: {exc}") from None
    if arr.dtype == object:
        raise TypeError(
            f"Tensor: data must hold numbers or bools ({_describe_ragged(data) or 'objects'})"
        )
    return arr


def _describe_ragged(data: Any, path: str = "data") -> str:
    """Where a nested list first stops being rectangular (or holds a non-number)."""
    if isinstance(data, (list, tuple)):
        lens = [len(v) if isinstance(v, (list, tuple)) else None for v in data]
        if any(n is None for n in lens) and any(n is not None for n in lens):
            i = next(i for i, n in enumerate(lens) if n is not None)
            j = next(i for i, n in enumerate(lens) if n is None)
            return f"{path}[{i}] is a sequence but {path}[{j}] is a scalar"
        if lens and lens[0] is not None and len(set(lens)) > 1:
            j = next(i for i, n in enumerate(lens) if n != lens[0])
            return f"{path}[0] has length {lens[0]} but {path}[{j}] has length {lens[j]}"
        for i, v in enumerate(data):
            if isinstance(v, (list, tuple)):
                inner = _describe_ragged(v, f"{path}[{i}]")
                if inner:
                    return inner
            elif not isinstance(v, (int, float, bool, complex, np.generic)):
                return f"{path}[{i}] is a {type(v).__name__}"
        return ""
    return f"a {type(data).__name__}"


class Device(str):
    """Where a tensor lives, PyTorch style: a string ``"cpu"`` or ``"cuda:<id>"`` (so it prints
    as one and compares equal to it), with ``type`` (``"cpu"`` / ``"cuda"``), ``index``
    (``None`` / the device id) and ``backend`` (``"numpy"`` / ``"cuda"``). Accepted wherever a
    backend is named (``t.to(other.device)``).
    """

    __slots__ = ()

    @property
    def type(self) -> str:
        return str.__str__(self).partition(":")[0]

    @property
    def index(self) -> int | None:
        rest = str.__str__(self).partition(":")[2]
        return int(rest) if rest else None

    @property
    def backend(self) -> str:
        return "numpy" if self.type == "cpu" else "cuda"

    def __repr__(self) -> str:
        if self.index is None:
            return f"device(type={self.type!r})"
        return f"device(type={self.type!r}, index={self.index})"


def _device_of(data: Any) -> Device:
    if isinstance(data, (np.ndarray, np.generic)):
        return Device("cpu")
    dev = getattr(data, "device", None)
    return Device(f"cuda:{int(getattr(dev, 'id', 0) or 0)}")


class Tensor:
    """An n-dimensional array on the NumPy or CUDA backend, with autograd.

    Args:
        data: array-like; Python lists and scalars become float32, NumPy/CuPy arrays keep
            their dtype unless ``dtype`` is given.
        requires_grad: record operations on this tensor so ``backward`` reaches it.
        dtype: optional dtype to cast to.
        backend: ``"numpy"`` or ``"cuda"`` (or an alias: ``"cpu"``, ``"gpu"``); default: the
            array's own backend for arrays, the active backend for everything else.

    PyTorch-style use: ``==``/``!=``/``<``... are element-wise and give bool tensors; the hash
    is the identity (tensors work as dict keys and in sets; never use ``in`` on a list of
    tensors to find one: that compares values). ``size()``/``size(d)``, ``numel()``,
    ``dim()``, ``.device`` and the conversions ``float(t)``/``int(t)``/``bool(t)`` (one element
    only) behave as in PyTorch; reductions take ``dim=``/``keepdim=`` or ``axis=``/
    ``keepdims=``.
    """

    __array_priority__ = 1000  # so ndarray (op) Tensor defers to Tensor's reflected op

    def __init__(
        self,
        data: Any,
        requires_grad: bool = False,
        dtype: Any = None,
        backend: str | None = None,
        _copy: bool = False,
    ) -> None:
        if isinstance(data, Tensor):
            data = data.data
        if isinstance(data, np.generic):  # NumPy scalars (e.g. full reductions) keep dtype
            data = np.asarray(data)
        if backend is not None:
            backend = _backend.canonical_name(backend, allow_auto=False, op="Tensor")
        if _is_array(data):
            if backend is not None and _array_backend_name(data) != backend:
                data = _backend.to_backend(data, backend)
            if dtype is not None and data.dtype != np.dtype(dtype):
                data = data.astype(dtype)
        else:
            be = _factory_backend(backend)
            arr = _host_array(data)
            if dtype is None and arr.dtype.kind == "f":
                dtype = np.float32  # Python floats and lists of them: float32, as PyTorch
            data = be.xp.asarray(arr, dtype=dtype)
        if data.dtype.kind not in "biuf":
            raise TypeError(
                f"Tensor: data must hold numbers or bools, got dtype {data.dtype} "
                f"(from {type(data).__name__})"
            )
        self.data = data
        self.requires_grad = bool(requires_grad)
        self.grad: Tensor | None = None
        self._node: tuple | None = None
        self.name: str | None = None

    # ----------------------------------------------------------------- properties
    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def size(self, dim: int | None = None) -> Any:
        """The shape as a tuple (PyTorch's ``size()``), or the length of dimension ``dim``."""
        if dim is None:
            return tuple(self.data.shape)
        from gpucnn._checks import check_axis

        d = check_axis("size", dim, self.ndim, "dim", self.shape)
        if self.ndim == 0:
            raise IndexError(f"size({dim}): a 0-d tensor has no dimensions (its size() is ())")
        return int(self.data.shape[d])

    def numel(self) -> int:
        """The number of elements (``numpy``'s ``arr.size``)."""
        return int(self.data.size)

    nelement = numel

    def dim(self) -> int:
        """The number of dimensions (``ndim``)."""
        return self.data.ndim

    @property
    def backend(self) -> str:
        """``"numpy"`` or ``"cuda"``: where the data lives."""
        return _array_backend_name(self.data)

    @property
    def device(self) -> Device:
        """PyTorch-style device: ``"cpu"`` (NumPy backend) or ``"cuda:<id>"`` (cuda backend)."""
        return _device_of(self.data)

    @property
    def is_cuda(self) -> bool:
        return self.backend == "cuda"

    @property
    def xp(self) -> Any:
        """The array module of this tensor (``numpy`` or ``cupy``)."""
        return _backend.get_backend(self.backend).xp

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    @property
    def T(self) -> Tensor:
        return self.transpose()

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self) -> Iterator[Tensor]:
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        for i in range(self.shape[0]):
            yield self[i]

    def __contains__(self, value: Any) -> bool:
        """``value in t``: whether any element equals ``value`` (PyTorch)."""
        eq = self._cmp(value, "__eq__")
        if eq is NotImplemented:
            raise TypeError(
                f"Tensor.__contains__ only supports a Tensor or a number, got "
                f"{type(value).__name__}"
            )
        return bool(eq.data.any())

    # one-element tensors as Python scalars (PyTorch's rules)
    def _scalar(self, what: str) -> Any:
        n = self.numel()
        if n != 1:
            if what == "bool":
                raise RuntimeError(
                    "Boolean value of Tensor with "
                    f"{'no values' if n == 0 else 'more than one value'} is ambiguous "
                    f"(shape {self.shape}); use .any() or .all()"
                )
            raise ValueError(
                f"{what}(): only one-element tensors can be converted to Python scalars, got "
                f"shape {self.shape} ({n} elements)"
            )
        return self.data.reshape(()).item()

    def __bool__(self) -> bool:
        return bool(self._scalar("bool"))

    def __float__(self) -> float:
        return float(self._scalar("float"))

    def __int__(self) -> int:
        return int(self._scalar("int"))

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({_backend.to_numpy(self.data)!r}, backend={self.backend!r}{grad})"

    # ----------------------------------------------------------------- conversion
    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (copied from the GPU on the CUDA backend)."""
        return _backend.to_numpy(self.data)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """``np.asarray(t)`` of a NumPy-backend tensor: its array (no copy unless ``dtype``
        or ``copy=True`` asks for one). A cuda tensor refuses, as in PyTorch and CuPy: an
        implicit device-to-host copy would hide a sync; use ``t.numpy()`` or ``t.cpu()``."""
        if self.backend != "numpy":
            raise TypeError(
                f"np.asarray: a Tensor on {self.device} is not converted to a NumPy array "
                "implicitly (that copies from the device); use t.numpy() or t.cpu() first"
            )
        a = self.data
        if dtype is not None and a.dtype != np.dtype(dtype):
            if copy is False:
                raise ValueError(f"np.asarray: a cast from {a.dtype} to {np.dtype(dtype)} "
                                 "needs a copy, but copy=False")
            return a.astype(dtype)
        return a.copy() if copy else a

    def item(self) -> float:
        """The value of a one-element tensor as a Python number."""
        if self.numel() != 1:
            raise ValueError(f"item(): tensor has {self.numel()} elements, expected 1")
        return self.data.reshape(()).item()

    def tolist(self) -> Any:
        return self.numpy().tolist()

    def detach(self) -> Tensor:
        """A tensor sharing the data, cut from the graph."""
        return Tensor(self.data)

    def to(self, target: Any = None, dtype: Any = None) -> Tensor:
        """This tensor on another backend and/or with another dtype (PyTorch's ``to``).

        ``target``: a backend name or alias (``"numpy"``/``"cpu"``, ``"cuda"``/``"gpu"``/
        ``"cuda:0"``), a :class:`Device`, a Tensor (its backend and dtype), or a dtype.
        Differentiable (the gradient moves back); ``self`` when nothing changes.
        """
        backend = None
        if isinstance(target, Tensor):
            backend, dtype = target.backend, (target.dtype if dtype is None else dtype)
        elif isinstance(target, str):
            backend = _backend.canonical_name(target, allow_auto=False, op="Tensor.to")
        elif target is not None:
            if dtype is not None:
                raise TypeError(f"Tensor.to: got two dtypes ({target!r} and dtype={dtype!r})")
            dtype = target
        out = self
        if dtype is not None:
            try:
                dt = np.dtype(dtype)
            except TypeError:
                raise TypeError(
                    f"Tensor.to: expected a backend name ('numpy'/'cpu', 'cuda'/'gpu'), a "
                    f"Device, a Tensor or a dtype, got {target!r} ({type(target).__name__})"
                ) from None
            out = out.astype(dt)
        if backend is not None and backend != out.backend:
            out = _ToBackend.apply(out, backend)
        return out

    def cpu(self) -> Tensor:
        """This tensor on the NumPy backend (``to("cpu")``)."""
        return self.to("numpy")

    def cuda(self) -> Tensor:
        """This tensor on the cuda backend (``to("cuda")``)."""
        return self.to("cuda")

    def astype(self, dtype: Any) -> Tensor:
        """A cast to ``dtype``: differentiable to a float dtype; a cast to an integer or bool
        dtype is cut from the graph (as in PyTorch). ``self`` when the dtype is already it."""
        dt = np.dtype(dtype)
        if dt == self.dtype:
            return self
        if dt.kind != "f":
            return Tensor(self.data.astype(dt))
        return _Cast.apply(self, dt)

    def float(self) -> Tensor:
        """float32 copy (differentiable)."""
        return self.astype(np.float32)

    def double(self) -> Tensor:
        """float64 copy (differentiable)."""
        return self.astype(np.float64)

    def long(self) -> Tensor:
        """int64 copy (no gradient)."""
        return self.astype(np.int64)

    def int(self) -> Tensor:
        """int32 copy (no gradient)."""
        return self.astype(np.int32)

    def bool(self) -> Tensor:
        """bool copy (no gradient)."""
        return self.astype(np.bool_)

    def clone(self) -> Tensor:
        """A differentiable copy with its own data."""
        return _Clone.apply(self)

    # ----------------------------------------------------------------- autograd
    def zero_grad(self) -> None:
        self.grad = None

    def backward(self, grad: Any = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into the ``.grad`` of every leaf that requires grad.

        A leaf whose ``.grad`` is None gets a new array, or, for a :class:`Parameter` whose
        ``_flat_grad`` slot a flat optimizer set (a view of its flat gradient buffer), the
        gradient written into that slot.

        Args:
            grad: gradient of the final objective w.r.t. ``self``; default 1 for one-element
                tensors.
            retain_graph: keep the saved arrays so ``backward`` can run again.
        """
        if not self.requires_grad:
            raise RuntimeError("backward(): tensor does not require grad and has no grad_fn")
        xp = self.xp
        if grad is None:
            if self.numel() != 1:
                raise RuntimeError(
                    f"backward(): grad can be implicit only for one-element tensors, "
                    f"got shape {self.shape}"
                )
            g = xp.ones(self.data.shape, dtype=self.data.dtype)
        else:
            g = grad.data if isinstance(grad, Tensor) else xp.asarray(grad, dtype=self.dtype)
            if g.shape != self.data.shape:
                raise ValueError(
                    f"backward(): grad shape {tuple(g.shape)} does not match tensor {self.shape}"
                )

        # Reverse topological order, iteratively (deep nets would overflow recursion).
        order: list[Tensor] = []
        seen: set[int] = set()
        stack: list[tuple[Tensor, bool]] = [(self, False)]
        while stack:
            t, done = stack.pop()
            if done:
                order.append(t)
                continue
            if id(t) in seen:
                continue
            seen.add(id(t))
            stack.append((t, True))
            if t._node is not None:
                # Leaves pushed first are explored last, so each comes right after its
                # consumers below: its gradient is final (its hooks run) early in backward.
                for parent in sorted(t._node[2], key=lambda p: p._node is not None):
                    if parent.requires_grad and id(parent) not in seen:
                        stack.append((parent, False))

        grads: dict[int, Any] = {id(self): g}
        for t in reversed(order):
            gt = grads.pop(id(t), None)
            if gt is None:
                continue
            if t._node is None:
                if t.requires_grad:
                    if t.grad is None:
                        t.grad = Tensor(_leaf_grad(t, gt))
                    else:
                        t.grad.data += gt
                    hooks = t.__dict__.get("_post_accumulate_grad_hooks")
                    if hooks:  # this backward's gradient of t is final (gpucnn.distributed)
                        for hook in tuple(hooks):
                            hook(t)
                continue
            fn, ctx, parents = t._node
            if ctx is None:
                raise RuntimeError(
                    "backward(): the graph was already freed; call backward(retain_graph=True) "
                    "the first time to run it twice"
                )
            in_grads = fn.backward(ctx, gt)
            if not isinstance(in_grads, tuple):
                in_grads = (in_grads,)
            if len(in_grads) != len(parents):
                raise RuntimeError(
                    f"{fn.__name__}.backward returned {len(in_grads)} grads for "
                    f"{len(parents)} tensor inputs"
                )
            for p, pg in zip(parents, in_grads):
                if pg is None or not p.requires_grad:
                    continue
                if pg.shape != p.data.shape:
                    raise RuntimeError(
                        f"{fn.__name__}.backward: grad shape {tuple(pg.shape)} != input shape "
                        f"{p.shape}"
                    )
                prev = grads.get(id(p))
                grads[id(p)] = pg if prev is None else prev + pg
            if not retain_graph:
                t._node = (fn, None, parents)

    # ----------------------------------------------------------------- operators
    def _wrap(self, other: Any) -> Tensor:
        if isinstance(other, Tensor):
            return other
        if _is_array(other):
            return Tensor(other)
        if isinstance(other, (int, float, bool, np.number)):
            # a fill kernel on the device, not an upload of a host scalar per op
            return Tensor(self.xp.full((), other, dtype=self.dtype))
        return Tensor(self.xp.asarray(other, dtype=self.dtype))

    def __add__(self, o: Any) -> Tensor:
        return _Add.apply(self, self._wrap(o))

    def __radd__(self, o: Any) -> Tensor:
        return _Add.apply(self._wrap(o), self)

    def __sub__(self, o: Any) -> Tensor:
        return _Sub.apply(self, self._wrap(o))

    def __rsub__(self, o: Any) -> Tensor:
        return _Sub.apply(self._wrap(o), self)

    def __mul__(self, o: Any) -> Tensor:
        return _Mul.apply(self, self._wrap(o))

    def __rmul__(self, o: Any) -> Tensor:
        return _Mul.apply(self._wrap(o), self)

    def __truediv__(self, o: Any) -> Tensor:
        return _Div.apply(self, self._wrap(o))

    def __rtruediv__(self, o: Any) -> Tensor:
        return _Div.apply(self._wrap(o), self)

    def __neg__(self) -> Tensor:
        return _Neg.apply(self)

    def __pow__(self, exponent: float) -> Tensor:
        if isinstance(exponent, Tensor):
            raise TypeError("pow: only a constant (Python number) exponent is supported")
        return _Pow.apply(self, float(exponent))

    def __matmul__(self, o: Any) -> Tensor:
        from gpucnn.functional.basic import matmul

        return matmul(self, self._wrap(o))

    def __rmatmul__(self, o: Any) -> Tensor:
        from gpucnn.functional.basic import matmul

        return matmul(self._wrap(o), self)

    def __getitem__(self, index: Any) -> Tensor:
        if isinstance(index, Tensor):
            index = index.data
        return _GetItem.apply(self, index)

    # comparisons: element-wise (PyTorch), not differentiable, return boolean tensors
    def _cmp(self, o: Any, op: str) -> Any:
        if isinstance(o, Tensor):
            if o.backend != self.backend:
                raise RuntimeError(
                    f"Tensor {op.strip('_')}: the operands live on different backends "
                    f"({self.backend} and {o.backend}); move one with .to('{self.backend}')"
                )
            other = o.data
        elif _is_array(o):
            if _array_backend_name(o) != self.backend:
                raise RuntimeError(
                    f"Tensor {op.strip('_')}: a {_array_backend_name(o)} array and a tensor on "
                    f"{self.backend}; move the array with gpucnn.backend.to_backend(a, "
                    f"'{self.backend}') first"
                )
            other = o
        elif isinstance(o, (numbers.Number, np.generic)):
            other = o
        else:
            return NotImplemented  # e.g. None or a string: Python falls back (== is False)
        return Tensor(getattr(self.data, op)(other))

    def __eq__(self, o: Any) -> Any:  # type: ignore[override]
        return self._cmp(o, "__eq__")

    def __ne__(self, o: Any) -> Any:  # type: ignore[override]
        return self._cmp(o, "__ne__")

    def __lt__(self, o: Any) -> Any:
        return self._cmp(o, "__lt__")

    def __le__(self, o: Any) -> Any:
        return self._cmp(o, "__le__")

    def __gt__(self, o: Any) -> Any:
        return self._cmp(o, "__gt__")

    def __ge__(self, o: Any) -> Any:
        return self._cmp(o, "__ge__")

    # the identity hash (PyTorch's rule): tensors stay usable as dict keys and in sets, where
    # lookups compare identity first; == itself is element-wise
    __hash__ = object.__hash__

    def eq(self, o: Any) -> Tensor:
        return self._cmp_checked(o, "__eq__")

    def ne(self, o: Any) -> Tensor:
        return self._cmp_checked(o, "__ne__")

    def lt(self, o: Any) -> Tensor:
        return self._cmp_checked(o, "__lt__")

    def le(self, o: Any) -> Tensor:
        return self._cmp_checked(o, "__le__")

    def gt(self, o: Any) -> Tensor:
        return self._cmp_checked(o, "__gt__")

    def ge(self, o: Any) -> Tensor:
        return self._cmp_checked(o, "__ge__")

    def _cmp_checked(self, o: Any, op: str) -> Tensor:
        out = self._cmp(o, op)
        if out is NotImplemented:
            raise TypeError(
                f"Tensor.{op.strip('_')}: expected a Tensor, an array or a number, got "
                f"{type(o).__name__}"
            )
        return out

    def any(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None,
            keepdim: bool | None = None) -> Tensor:
        """Whether any element (along ``axis``/``dim``) is non-zero: a bool tensor."""
        return self._logical("any", axis, keepdims, dim, keepdim)

    def all(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None,
            keepdim: bool | None = None) -> Tensor:
        """Whether every element (along ``axis``/``dim``) is non-zero: a bool tensor."""
        return self._logical("all", axis, keepdims, dim, keepdim)

    def _logical(self, op: str, axis: Any, keepdims: bool, dim: Any, keepdim: Any) -> Tensor:
        from gpucnn._checks import check_axes
        from gpucnn.functional.basic import resolve_dim, resolve_keepdim

        axes = check_axes(op, resolve_dim(op, axis, dim), self.ndim, shape=self.shape)
        keep = resolve_keepdim(op, keepdims, keepdim)
        return Tensor(getattr(self.data.astype(bool), op)(axis=axes, keepdims=keep))

    def equal(self, o: Tensor) -> bool:
        """Whether ``o`` has the same shape and elements (PyTorch's ``torch.equal``)."""
        if not isinstance(o, Tensor):
            raise TypeError(f"Tensor.equal: expected a Tensor, got {type(o).__name__}")
        return self.shape == o.shape and bool(self._cmp(o, "__eq__").data.all())

    # ----------------------------------------------------------------- methods (functional)
    # Reductions take NumPy/Keras ``axis=``/``keepdims=`` or PyTorch ``dim=``/``keepdim=``
    # (positional arguments are the axis); giving both spellings is a TypeError.
    def sum(
        self, axis: Any = None, keepdims: bool = False, *, dim: Any = None,
        keepdim: bool | None = None,
    ) -> Tensor:
        from gpucnn.functional.basic import sum as _sum

        return _sum(self, axis, keepdims, dim=dim, keepdim=keepdim)

    def mean(
        self, axis: Any = None, keepdims: bool = False, *, dim: Any = None,
        keepdim: bool | None = None,
    ) -> Tensor:
        from gpucnn.functional.basic import mean

        return mean(self, axis, keepdims, dim=dim, keepdim=keepdim)

    def max(
        self, axis: Any = None, keepdims: bool = False, *, dim: int | None = None,
        keepdim: bool | None = None,
    ) -> Any:
        """Maximum values over ``axis`` (positional or ``axis=``); with ``dim=`` the PyTorch
        result ``(values, indices)`` (see :func:`gpucnn.functional.max`)."""
        from gpucnn.functional.basic import max as _max

        return _max(self, axis, keepdims, dim=dim, keepdim=keepdim)

    def argmax(
        self, axis: int | None = None, keepdims: bool = False, *, dim: int | None = None,
        keepdim: bool | None = None,
    ) -> Tensor:
        """int64 indices of the maxima over ``axis``/``dim`` (None: of the flattened tensor)."""
        from gpucnn.functional.basic import argmax

        return argmax(self, axis, keepdims, dim=dim, keepdim=keepdim)

    def softmax(self, axis: int = -1, *, dim: int | None = None) -> Tensor:
        from gpucnn.functional.activation import softmax

        return softmax(self, axis, dim=dim)

    def log_softmax(self, axis: int = -1, *, dim: int | None = None) -> Tensor:
        from gpucnn.functional.activation import log_softmax

        return log_softmax(self, axis, dim=dim)

    def reshape(self, *shape: Any) -> Tensor:
        from gpucnn.functional.basic import reshape

        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return reshape(self, shape)

    def view(self, *shape: Any) -> Tensor:
        return self.reshape(*shape)

    def view_as(self, other: Tensor) -> Tensor:
        """This tensor reshaped to ``other``'s shape (PyTorch's ``view_as``)."""
        return self.reshape(tuple(other.shape))

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        from gpucnn.functional.basic import flatten

        return flatten(self, start_dim, end_dim)

    def transpose(self, *axes: Any) -> Tensor:
        """PyTorch's ``t.transpose(d0, d1)`` (two ints: swap those two dims); NumPy's
        ``t.transpose()`` (reverse the dims) and ``t.transpose(perm)`` / ``t.transpose(0, 2, 1)``
        (three or more ints: a permutation)."""
        from gpucnn.functional.basic import transpose

        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        elif len(axes) == 2:  # on a 2-D tensor NumPy's (1, 0) is the same swap
            from gpucnn._checks import check_axis

            d0, d1 = (check_axis("transpose", d, self.ndim, "dim", self.shape) for d in axes)
            perm = list(range(self.ndim))
            perm[d0], perm[d1] = perm[d1], perm[d0]
            axes = tuple(perm)
        return transpose(self, axes or None)

    def permute(self, *dims: Any) -> Tensor:
        """PyTorch-style ``permute(0, 2, 3, 1)`` (or one tuple)."""
        from gpucnn.functional.basic import permute

        return permute(self, *dims)

    def unsqueeze(self, dim: int | None = None, *, axis: int | None = None) -> Tensor:
        """A new size-1 dimension at ``dim``/``axis`` (in ``[-ndim-1, ndim]``)."""
        from gpucnn.functional.basic import unsqueeze

        return unsqueeze(self, dim, axis=axis)

    def squeeze(self, dim: Any = None, *, axis: Any = None) -> Tensor:
        """Drop size-1 dimensions (all, or those of ``dim``/``axis`` that have size 1, as
        PyTorch)."""
        from gpucnn.functional.basic import squeeze

        return squeeze(self, dim, axis=axis)

    def exp(self) -> Tensor:
        from gpucnn.functional.basic import exp

        return exp(self)

    def log(self) -> Tensor:
        from gpucnn.functional.basic import log

        return log(self)

    def sqrt(self) -> Tensor:
        return self**0.5

    def abs(self) -> Tensor:
        from gpucnn.functional.basic import abs as _abs

        return _abs(self)


class Parameter(Tensor):
    """A tensor that a :class:`~gpucnn.Module` trains (``requires_grad`` defaults to True).

    Attributes:
        _flat_grad: the gradient slot of the optimizers' flat-buffer mechanism
            (:mod:`gpucnn.optim.flat`): None, or a view of a flat gradient buffer, into which
            ``backward`` then writes this parameter's gradient instead of allocating one. Set
            and cleared only by that mechanism; not copied or pickled with the parameter.
    """

    _flat_grad: Any = None

    def __init__(self, data: Any, requires_grad: bool = True, dtype: Any = None) -> None:
        super().__init__(data, requires_grad=requires_grad, dtype=dtype)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_flat_grad", None)  # belongs to an optimizer's buffers, not to a copy
        return state

    def __repr__(self) -> str:
        return "Parameter(" + super().__repr__()[len("Tensor(") :]


# ------------------------------------------------------------------------- core element-wise


class _Add(Function):
    @staticmethod
    def forward(ctx: Context, a: Any, b: Any) -> Any:
        ctx.shapes = (a.shape, b.shape)
        return a + b

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple:
        sa, sb = ctx.shapes
        return unbroadcast(g, sa), unbroadcast(g, sb)


class _Sub(Function):
    @staticmethod
    def forward(ctx: Context, a: Any, b: Any) -> Any:
        ctx.shapes = (a.shape, b.shape)
        return a - b

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple:
        sa, sb = ctx.shapes
        return unbroadcast(g, sa), unbroadcast(-g, sb)


class _Mul(Function):
    @staticmethod
    def forward(ctx: Context, a: Any, b: Any) -> Any:
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple:
        a, b = ctx.saved
        ga = unbroadcast(g * b, a.shape) if ctx.needs_input_grad[0] else None
        gb = unbroadcast(g * a, b.shape) if ctx.needs_input_grad[1] else None
        return ga, gb


class _Div(Function):
    @staticmethod
    def forward(ctx: Context, a: Any, b: Any) -> Any:
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple:
        a, b = ctx.saved
        ga = unbroadcast(g / b, a.shape) if ctx.needs_input_grad[0] else None
        gb = unbroadcast(-g * a / (b * b), b.shape) if ctx.needs_input_grad[1] else None
        return ga, gb


class _Neg(Function):
    @staticmethod
    def forward(ctx: Context, a: Any) -> Any:
        return -a

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        return -g


class _Pow(Function):
    @staticmethod
    def forward(ctx: Context, a: Any, p: float) -> Any:
        ctx.save_for_backward(a)
        ctx.p = p
        return a**p

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        (a,) = ctx.saved
        return g * ctx.p * a ** (ctx.p - 1)


class _Cast(Function):
    @staticmethod
    def forward(ctx: Context, a: Any, dtype: np.dtype) -> Any:
        ctx.src = a.dtype
        return a.astype(dtype)

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        return g.astype(ctx.src)


class _Clone(Function):
    @staticmethod
    def forward(ctx: Context, a: Any) -> Any:
        return a.copy()

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        return g


class _ToBackend(Function):
    @staticmethod
    def forward(ctx: Context, a: Any, backend: str) -> Any:
        ctx.src = _array_backend_name(a)
        return _backend.to_backend(a, backend)

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        return _backend.to_backend(g, ctx.src)


def _is_basic_index(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in items)


class _GetItem(Function):
    @staticmethod
    def forward(ctx: Context, a: Any, index: Any) -> Any:
        ctx.shape, ctx.dtype, ctx.index = a.shape, a.dtype, index
        return a[index]

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        xp = _backend.backend_of(g).xp
        out = xp.zeros(ctx.shape, dtype=g.dtype)
        if _is_basic_index(ctx.index):
            out[ctx.index] = g
        else:
            _scatter_add(out, ctx.index, g)
        return out


# ------------------------------------------------------------------------- factories


def tensor(
    data: Any, requires_grad: bool = False, dtype: Any = None, backend: str | None = None
) -> Tensor:
    """A new :class:`Tensor` (see its arguments)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, backend=backend)


def _factory_backend(backend: str | None) -> Any:
    if not backend:
        return _backend.get()
    return _backend.get_backend(_backend.canonical_name(backend, allow_auto=False))


def zeros(
    *shape: Any, dtype: Any = np.float32, requires_grad: bool = False, backend: str | None = None
) -> Tensor:
    """A tensor of zeros of ``shape`` on ``backend`` (default: the active one)."""
    shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], Sequence) else shape
    xp = _factory_backend(backend).xp
    return Tensor(xp.zeros(shape, dtype=dtype), requires_grad=requires_grad)


def ones(
    *shape: Any, dtype: Any = np.float32, requires_grad: bool = False, backend: str | None = None
) -> Tensor:
    """A tensor of ones of ``shape`` on ``backend`` (default: the active one)."""
    shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], Sequence) else shape
    xp = _factory_backend(backend).xp
    return Tensor(xp.ones(shape, dtype=dtype), requires_grad=requires_grad)


def randn(
    *shape: Any, dtype: Any = np.float32, requires_grad: bool = False, backend: str | None = None
) -> Tensor:
    """Standard-normal samples of ``shape`` (seeded by :func:`gpucnn.manual_seed`)."""
    from gpucnn.random import generator

    shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], Sequence) else shape
    be = _factory_backend(backend)
    data = generator(be.name).standard_normal(shape, dtype=dtype)
    return Tensor(data, requires_grad=requires_grad)


def rand(
    *shape: Any, dtype: Any = np.float32, requires_grad: bool = False, backend: str | None = None
) -> Tensor:
    """Uniform [0, 1) samples of ``shape`` (seeded by :func:`gpucnn.manual_seed`)."""
    from gpucnn.random import generator

    shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], Sequence) else shape
    be = _factory_backend(backend)
    data = generator(be.name).random(shape, dtype=dtype)
    return Tensor(data, requires_grad=requires_grad)


def from_numpy(array: np.ndarray) -> Tensor:
    """A Tensor on the NumPy backend sharing ``array``'s memory and dtype (PyTorch's
    ``torch.from_numpy``): writes to either show in the other."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(array).__name__}")
    return Tensor(array)
