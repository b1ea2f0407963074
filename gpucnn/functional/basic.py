"""Linear algebra, shape, element-wise and reduction ops (PyTorch semantics, any backend).

These run on the backend's ``xp`` (NumPy or CuPy, where GEMMs go to cuBLAS); each is a
:class:`~gpucnn.tensor.Function` with forward and backward side by side.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

import numpy as np

from gpucnn._checks import check_axes, check_axis, check_int, check_number
from gpucnn.functional._dtypes import require_float, require_same_dtype
from gpucnn.tensor import Context, Function, Tensor, unbroadcast

__all__ = [
    "matmul",
    "linear",
    "reshape",
    "flatten",
    "transpose",
    "permute",
    "concat",
    "cat",
    "stack",
    "pad",
    "sum",
    "mean",
    "max",
    "exp",
    "log",
    "abs",
    "sqrt",
    "clip",
    "where",
]


def _xp(a: Any) -> Any:
    from gpucnn.backend import backend_of

    return backend_of(a).xp


def _axes(axis: Any, x: Any, op: str = "reduction") -> tuple[int, ...]:
    return check_axes(op, axis, x.ndim, shape=x.shape)


def _tensor(op: str, x: Any, name: str = "input") -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(x).__name__}")
    return x


def _expand_reduced(g: Any, shape: tuple, axes: tuple[int, ...], keepdims: bool) -> Any:
    if not keepdims:
        for a in sorted(axes):
            g = _xp(g).expand_dims(g, a)
    return g


# --------------------------------------------------------------------------- linear algebra


class _MatMul(Function):
    @staticmethod
    def forward(ctx: Context, a: Any, b: Any) -> Any:
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple:
        a, b = ctx.saved
        xp = _xp(g)
        ga = gb = None
        if a.ndim == 1 and b.ndim == 1:
            return (g * b if ctx.needs_input_grad[0] else None), (
                g * a if ctx.needs_input_grad[1] else None
            )
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = g
        if a.ndim == 1:
            g2 = xp.expand_dims(g2, -2)
        if b.ndim == 1:
            g2 = xp.expand_dims(g2, -1)
        if ctx.needs_input_grad[0]:
            ga = unbroadcast(g2 @ xp.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape)
        if ctx.needs_input_grad[1]:
            gb = unbroadcast(xp.swapaxes(a2, -1, -2) @ g2, b2.shape).reshape(b.shape)
        return ga, gb


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """Matrix product with NumPy broadcasting rules (``a @ b``)."""
    _tensor("matmul", a, "a")
    _tensor("matmul", b, "b")
    require_float("matmul", a, "operand a")
    require_float("matmul", b, "operand b")
    require_same_dtype("matmul", a, b, ("a", "b"))
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: both operands need at least 1 dim, got {a.shape} and {b.shape}")
    ka = a.shape[-1]
    kb = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if ka != kb:
        raise ValueError(
            f"matmul: inner dimensions differ: a {a.shape} has {ka}, b {b.shape} has {kb}"
        )
    return _MatMul.apply(a, b)


class _Linear(Function):
    @staticmethod
    def forward(ctx: Context, x: Any, w: Any, b: Any = None) -> Any:
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        y = x @ w.T
        if b is not None:
            y += b
        return y

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple:
        x, w = ctx.saved
        need = ctx.needs_input_grad
        gx = g @ w if need[0] else None
        gw = None
        if need[1]:
            g2 = g.reshape(-1, g.shape[-1])
            gw = g2.T @ x.reshape(-1, x.shape[-1])
        if ctx.has_bias:
            gb = g.reshape(-1, g.shape[-1]).sum(axis=0) if need[2] else None
            return gx, gw, gb
        return gx, gw


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ weight.T + bias``; x (..., in), weight (out, in), bias (out,) → (..., out)."""
    op = "linear"
    _tensor(op, x)
    _tensor(op, weight, "weight")
    require_float(op, x, "input")
    require_float(op, weight, "weight")
    require_same_dtype(op, x, weight, ("input", "weight"))
    if bias is not None:
        _tensor(op, bias, "bias")
        require_same_dtype(op, x, bias, ("input", "bias"))
    if x.ndim == 0:
        raise ValueError("linear: input must have at least 1 dim (..., in), got a 0-d input")
    if weight.ndim != 2:
        raise ValueError(f"linear: weight must be (out, in), got shape {weight.shape}")
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear: input has {x.shape[-1]} features (shape {x.shape}) but weight expects "
            f"{weight.shape[1]} (weight shape {weight.shape})"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"linear: bias must have shape ({weight.shape[0]},), got {bias.shape}")
    if bias is None:
        return _Linear.apply(x, weight)
    return _Linear.apply(x, weight, bias)


# --------------------------------------------------------------------------- shape


class _Reshape(Function):
    @staticmethod
    def forward(ctx: Context, a: Any, shape: tuple) -> Any:
        ctx.shape = a.shape
        return a.reshape(shape)

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        return g.reshape(ctx.shape)


def reshape(x: Tensor, shape: Sequence[int]) -> Tensor:
    """``x`` with a new shape (one entry may be -1)."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"reshape: shape must be a tuple of ints, got {shape!r}")
    shape = tuple(check_int("reshape", "shape entry", s, -1) for s in shape)
    if shape.count(-1) > 1:
        raise ValueError(f"reshape: only one entry of the shape may be -1, got {shape}")
    try:
        return _Reshape.apply(x, shape)
    except ValueError as exc:
        raise ValueError(f"reshape: cannot reshape {x.shape} into {shape}") from exc


def flatten(x: Tensor, start_dim: int = 1, end_dim: int = -1) -> Tensor:
    """Merge dims ``start_dim..end_dim`` into one (default keeps the batch dim, as nn.Flatten)."""
    nd = x.ndim
    if nd == 0:
        check_axis("flatten", start_dim, 0, "start_dim")
        check_axis("flatten", end_dim, 0, "end_dim")
        return reshape(x, (1,))
    s = check_axis("flatten", start_dim, nd, "start_dim", x.shape)
    e = check_axis("flatten", end_dim, nd, "end_dim", x.shape)
    if s > e:
        raise ValueError(f"flatten: start_dim {start_dim} is after end_dim {end_dim} for {x.shape}")
    shape = x.shape[:s] + (-1 if x.size else 0,) + x.shape[e + 1 :]
    if x.size == 0:
        n = 1
        for d in x.shape[s : e + 1]:
            n *= d
        shape = x.shape[:s] + (n,) + x.shape[e + 1 :]
    return reshape(x, shape)


class _Transpose(Function):
    @staticmethod
    def forward(ctx: Context, a: Any, axes: tuple | None) -> Any:
        axes = tuple(reversed(range(a.ndim))) if axes is None else axes
        ctx.inv = tuple(sorted(range(len(axes)), key=lambda i: axes[i]))
        return a.transpose(axes)

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        return g.transpose(ctx.inv)


def transpose(x: Tensor, axes: Sequence[int] | None = None) -> Tensor:
    """Permute dims (NumPy semantics: reverse them when ``axes`` is None)."""
    if axes is not None:
        if not isinstance(axes, (tuple, list)):
            raise TypeError(f"transpose: axes must be a tuple of ints or None, got {axes!r}")
        axes = tuple(check_axis("transpose", a, x.ndim, "axes entry", x.shape) for a in axes)
        if sorted(axes) != list(range(x.ndim)):
            raise ValueError(f"transpose: axes {axes} are not a permutation of {x.ndim} dims")
    return _Transpose.apply(x, axes)


def permute(x: Tensor, *dims: int) -> Tensor:
    """PyTorch-style ``permute(x, 0, 2, 3, 1)``."""
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    return transpose(x, dims)


class _Concat(Function):
    @staticmethod
    def forward(ctx: Context, *arrays: Any, axis: int = 0) -> Any:
        ctx.axis = axis
        ctx.sizes = [a.shape[axis] for a in arrays]
        return _xp(arrays[0]).concatenate(arrays, axis=axis)

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple:
        out = []
        start = 0
        for n in ctx.sizes:
            idx = [slice(None)] * g.ndim
            idx[ctx.axis] = slice(start, start + n)
            out.append(g[tuple(idx)])
            start += n
        return tuple(out)


def concat(tensors: Sequence[Tensor], axis: int = 1) -> Tensor:
    """Join tensors along ``axis`` (default 1: channels, for inception branches)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("concat: needs at least one tensor")
    for i, t in enumerate(tensors):
        _tensor("concat", t, f"tensor {i}")
    nd = tensors[0].ndim
    if nd == 0:
        raise ValueError("concat: zero-dimensional tensors cannot be concatenated")
    ax = check_axis("concat", axis, nd, shape=tensors[0].shape)
    ref = tensors[0].shape
    for i, t in enumerate(tensors):
        if t.ndim != nd or any(t.shape[d] != ref[d] for d in range(nd) if d != ax):
            raise ValueError(
                f"concat: tensor {i} has shape {t.shape}, expected {ref} except along axis {ax}"
            )
    return _Concat.apply(*tensors, axis=ax)


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """PyTorch spelling of :func:`concat` (default ``dim=0``)."""
    return concat(tensors, axis=dim)


def stack(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Join tensors along a new ``axis``."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: needs at least one tensor")
    for i, t in enumerate(tensors):
        _tensor("stack", t, f"tensor {i}")
        if t.shape != tensors[0].shape:
            raise ValueError(
                f"stack: tensor {i} has shape {t.shape}, expected {tensors[0].shape} (all equal)"
            )
    shape = tensors[0].shape
    nd = len(shape) + 1
    ax = check_axis("stack", axis, nd)
    parts = [reshape(t, t.shape[:ax] + (1,) + t.shape[ax:]) for t in tensors]
    return concat(parts, axis=ax)


class _Pad(Function):
    @staticmethod
    def forward(ctx: Context, a: Any, widths: tuple, value: float) -> Any:
        ctx.slices = tuple(slice(lo, lo + n) for (lo, _), n in zip(widths, a.shape))
        return _xp(a).pad(a, widths, mode="constant", constant_values=value)

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        return g[ctx.slices]


def pad(x: Tensor, pad: Sequence[int], value: float = 0.0) -> Tensor:
    """Constant padding, PyTorch order: ``(left, right, top, bottom, ...)`` from the last dim."""
    if not isinstance(pad, (tuple, list)):
        raise TypeError(f"pad: pad must be a tuple of ints, got {pad!r}")
    pad = tuple(check_int("pad", "pad entry", p) for p in pad)
    value = check_number("pad", "value", value, finite=False)
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ValueError(f"pad: needs pairs for at most {x.ndim} dims, got {pad}")
    if any(p < 0 for p in pad):
        raise ValueError(f"pad: negative padding {pad} is not supported")
    widths = [(0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        widths[x.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    return _Pad.apply(x, tuple(widths), float(value))


# --------------------------------------------------------------------------- reductions


class _Sum(Function):
    @staticmethod
    def forward(ctx: Context, a: Any, axes: tuple, keepdims: bool) -> Any:
        ctx.shape, ctx.axes, ctx.keepdims = a.shape, axes, keepdims
        # Integers and bools sum to int64 (PyTorch's rule; NumPy would keep uint64 etc.).
        dtype = np.int64 if a.dtype.kind in "biu" else None
        return a.sum(axis=axes, keepdims=keepdims, dtype=dtype)

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        g = _expand_reduced(g, ctx.shape, ctx.axes, ctx.keepdims)
        return _xp(g).broadcast_to(g, ctx.shape).copy()


def sum(x: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Sum over ``axis`` (int, tuple or None for all); integers and bools sum to int64."""
    _tensor("sum", x)
    if x.dtype.kind not in "fiub" or x.dtype == np.float16:
        require_float("sum", x)
    return _Sum.apply(x, _axes(axis, x, "sum"), bool(keepdims))


def mean(x: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:
    """Mean over ``axis`` (int, tuple or None for all); floating inputs only (as PyTorch)."""
    require_float("mean", _tensor("mean", x))
    axes = _axes(axis, x, "mean")
    n = 1
    for a in axes:
        n *= x.shape[a]
    return _Sum.apply(x, axes, keepdims) * (1.0 / builtins.max(n, 1))


class _Max(Function):
    @staticmethod
    def forward(ctx: Context, a: Any, axes: tuple, keepdims: bool) -> Any:
        y = a.max(axis=axes, keepdims=True)
        mask = a == y
        # Split the gradient evenly between ties (PyTorch's amax rule).
        count = mask.sum(axis=axes, keepdims=True)
        # A NaN maximum matches nothing (count 0): that slice passes no gradient.
        ctx.mask = mask / _xp(a).maximum(count, 1)
        ctx.axes, ctx.keepdims, ctx.shape = axes, keepdims, a.shape
        return y if keepdims else y.squeeze(axis=axes)

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        g = _expand_reduced(g, ctx.shape, ctx.axes, ctx.keepdims)
        return (g * ctx.mask).astype(g.dtype, copy=False)


def max(x: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Maximum over ``axis``; the gradient is shared evenly between tied maxima."""
    _tensor("max", x)
    axes = _axes(axis, x, "max")
    if any(x.shape[a] == 0 for a in axes):
        raise ValueError(f"max: cannot reduce over an empty axis of the input of shape {x.shape}")
    return _Max.apply(x, axes, bool(keepdims))


# --------------------------------------------------------------------------- element-wise


class _Exp(Function):
    @staticmethod
    def forward(ctx: Context, a: Any) -> Any:
        y = _xp(a).exp(a)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        return g * ctx.saved[0]


def exp(x: Tensor) -> Tensor:
    """Element-wise e**x."""
    return _Exp.apply(require_float("exp", _tensor("exp", x)))


class _Log(Function):
    @staticmethod
    def forward(ctx: Context, a: Any) -> Any:
        ctx.save_for_backward(a)
        return _xp(a).log(a)

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        return g / ctx.saved[0]


def log(x: Tensor) -> Tensor:
    """Element-wise natural logarithm."""
    return _Log.apply(require_float("log", _tensor("log", x)))


class _Abs(Function):
    @staticmethod
    def forward(ctx: Context, a: Any) -> Any:
        ctx.save_for_backward(a)
        return _xp(a).abs(a)

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        return g * _xp(g).sign(ctx.saved[0])


def abs(x: Tensor) -> Tensor:  # noqa: A001
    """Element-wise absolute value (gradient 0 at 0)."""
    return _Abs.apply(x)


def sqrt(x: Tensor) -> Tensor:
    """Element-wise square root."""
    return require_float("sqrt", _tensor("sqrt", x)) ** 0.5


class _Clip(Function):
    @staticmethod
    def forward(ctx: Context, a: Any, lo: float | None, hi: float | None) -> Any:
        xp = _xp(a)
        inside = xp.ones(a.shape, dtype=bool)
        if lo is not None:
            inside &= a >= lo
        if hi is not None:
            inside &= a <= hi
        ctx.inside = inside
        return xp.clip(a, lo, hi)

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        return g * ctx.inside


def clip(x: Tensor, min: float | None = None, max: float | None = None) -> Tensor:  # noqa: A002
    """Clamp to ``[min, max]``; the gradient passes only where the value was inside."""
    _tensor("clip", x)
    lo = check_number("clip", "min", min, allow_none=True, finite=False)
    hi = check_number("clip", "max", max, allow_none=True, finite=False)
    # Python ints stay ints, so an integer tensor clipped by ints keeps its dtype.
    lo = int(min) if isinstance(min, (int, np.integer)) else lo
    hi = int(max) if isinstance(max, (int, np.integer)) else hi
    return _Clip.apply(x, lo, hi)


class _Where(Function):
    @staticmethod
    def forward(ctx: Context, cond: Any, a: Any, b: Any) -> Any:
        ctx.cond, ctx.shapes = cond, (a.shape, b.shape)
        return _xp(a).where(cond, a, b)

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple:
        sa, sb = ctx.shapes
        zero = g.dtype.type(0)
        xp = _xp(g)
        return unbroadcast(xp.where(ctx.cond, g, zero), sa), unbroadcast(
            xp.where(ctx.cond, zero, g), sb
        )


def where(cond: Any, a: Tensor, b: Tensor) -> Tensor:
    """``a`` where ``cond`` holds, else ``b`` (broadcasting)."""
    c = cond.data if isinstance(cond, Tensor) else cond
    return _Where.apply(c, a, b)
