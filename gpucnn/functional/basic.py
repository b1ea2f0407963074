"""Linear algebra, shape, element-wise and reduction ops (PyTorch semantics, any backend).

These run on the backend's ``xp`` (NumPy or CuPy, where GEMMs go to cuBLAS); each is a
:class:`~gpucnn.tensor.Function` with forward and backward side by side.

Dimension arguments: every op taking ``axis=`` also takes PyTorch's ``dim=`` (and
``keepdims=`` / ``keepdim=``); positional arguments mean the same, and giving both spellings
is a ``TypeError``. One rule differs by spelling: :func:`max` with ``dim=`` returns PyTorch's
``(values, indices)`` pair (:class:`MaxResult`), with ``axis=`` (or positionally) the values
only, as NumPy and Keras.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

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
    "squeeze",
    "unsqueeze",
    "pad",
    "sum",
    "mean",
    "max",
    "MaxResult",
    "argmax",
    "exp",
    "log",
    "abs",
    "sqrt",
    "clip",
    "where",
]


def _xp(a: Any) -> Any:
    return _backend_of(a).xp


def _backend_of(a: Any) -> Any:
    from gpucnn.backend import backend_of

    return backend_of(a)


def _autocast_dtype(*tensors: Any) -> str | None:
    """The :class:`gpucnn.amp.autocast` dtype for a GEMM-class op on ``tensors``, or None."""
    from gpucnn.amp.autocast_mode import active_dtype

    return active_dtype(*tensors)


def _axes(axis: Any, x: Any, op: str = "reduction") -> tuple[int, ...]:
    return check_axes(op, axis, x.ndim, shape=x.shape)


def resolve_dim(op: str, axis: Any, dim: Any, default: Any = None) -> Any:
    """The one dimension argument of ``op``, given as NumPy's ``axis`` or PyTorch's ``dim``.

    ``axis`` is the argument the signature names first (``default`` is its default value);
    ``dim`` the other spelling (``None`` = not given). Both given is a ``TypeError``.
    """
    if dim is None:
        return axis
    if axis is not None and axis != default:
        raise TypeError(
            f"{op}: got both axis={axis!r} and dim={dim!r}; they are the same argument "
            "(NumPy/Keras and PyTorch spellings), give one"
        )
    return dim


def resolve_keepdim(op: str, keepdims: Any, keepdim: Any) -> bool:
    """``keepdims`` (NumPy) or ``keepdim`` (PyTorch, ``None`` = not given) as one bool."""
    if keepdim is None:
        return bool(keepdims)
    if keepdims:
        raise TypeError(
            f"{op}: got both keepdims={keepdims!r} and keepdim={keepdim!r}; they are the same "
            "argument, give one"
        )
    return bool(keepdim)


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
        if a.ndim == 2 and b.ndim == 2:
            return _backend_of(a).matmul2d(a, b)
        return a @ b

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple:
        a, b = ctx.saved
        xp = _xp(g)
        ga = gb = None
        if a.ndim == 2 and b.ndim == 2:  # through the backend (our GEMM in a graph capture)
            mm = _backend_of(g).matmul2d
            ga = mm(g, b, trans_b=True) if ctx.needs_input_grad[0] else None
            gb = mm(a, g, trans_a=True) if ctx.needs_input_grad[1] else None
            return ga, gb
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
    lp = _autocast_dtype(a, b)
    if lp is not None:  # autocast: operands and output rounded (see gpucnn.amp.autocast_mode)
        from gpucnn.amp.autocast_mode import cast

        return cast(_MatMul.apply(cast(a, lp), cast(b, lp)), lp)
    return _MatMul.apply(a, b)


class _Linear(Function):
    @staticmethod
    def forward(ctx: Context, x: Any, w: Any, b: Any = None) -> Any:
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        # As 2-D products through the backend (cuBLAS, or our GEMM in a CUDA-graph capture).
        # Rows counted explicitly: reshape(-1, 0) is ambiguous for a zero-feature input.
        rows = math.prod(x.shape[:-1])
        mm = _backend_of(x).matmul2d
        y = mm(x.reshape(rows, x.shape[-1]), w, trans_b=True).reshape(*x.shape[:-1], w.shape[0])
        if b is not None:
            y += b
        return y

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple:
        x, w = ctx.saved
        need = ctx.needs_input_grad
        mm = _backend_of(g).matmul2d
        rows = math.prod(g.shape[:-1])
        g2 = g.reshape(rows, g.shape[-1])
        gx = mm(g2, w).reshape(x.shape) if need[0] else None
        gw = None
        if need[1]:
            gw = mm(g2, x.reshape(rows, x.shape[-1]), trans_a=True)
        if ctx.has_bias:
            gb = g.reshape(rows, g.shape[-1]).sum(axis=0) if need[2] else None
            return gx, gw, gb
        return gx, gw


class _LinearAct(Function):
    """``act(x @ w.T + b)`` as one op for 2-D ``x``: the activation in the GEMM's epilogue
    where the backend can (see ``linear_forward_act``); the backward takes the activation's
    gradient from the saved output mask or pre-activation, then the product's."""

    @staticmethod
    def forward(ctx: Context, x: Any, w: Any, b: Any = None, *, kind: str,
                param: float) -> Any:  # fmt: skip
        y, act = _backend_of(x).linear_forward_act(x, w, b, kind, param)
        ctx.save_for_backward(x, w, act)
        ctx.has_bias, ctx.kind, ctx.param = b is not None, kind, param
        return y

    @staticmethod
    def backward(ctx: Context, gy: Any) -> tuple:
        x, w, act = ctx.saved
        be = _backend_of(gy)
        need = ctx.needs_input_grad
        g = be.activation_backward(act, gy, ctx.kind, ctx.param)
        gx = be.matmul2d(g, w) if need[0] else None
        gw = be.matmul2d(g, x, trans_a=True) if need[1] else None
        if ctx.has_bias:
            return gx, gw, (g.sum(axis=0) if need[2] else None)
        return gx, gw


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, *,
           activation: str | None = None, negative_slope: float = 0.01) -> Tensor:  # fmt: skip
    """``x @ weight.T + bias``; x (..., in), weight (out, in), bias (out,) → (..., out).

    ``activation`` (a gpucnn extension): ``"relu"``, ``"leaky_relu"`` (``negative_slope`` >
    0), ``"gelu"`` or ``"gelu_tanh"`` applied to the result; for 2-D ``x`` one fused op (bias
    and activation in our GEMM's epilogue under ``own_kernels``), equal to the activation
    applied after.
    """
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
    kind, param = None, 0.0
    if activation is not None:
        from gpucnn.backend.checks import check_fused_activation

        kind = activation
        param = float(negative_slope) if kind == "leaky_relu" else 0.0
        check_fused_activation(op, kind, param)
    lp = _autocast_dtype(x, weight, bias)
    if lp is not None:  # autocast: operands and output rounded (see gpucnn.amp.autocast_mode)
        from gpucnn.amp.autocast_mode import cast

        x, weight, bias = cast(x, lp), cast(weight, lp), cast(bias, lp)
        y = _Linear.apply(x, weight) if bias is None else _Linear.apply(x, weight, bias)
        y = cast(y, lp)
        return y if kind is None else _apply_activation(y, kind, param)
    if kind is not None and x.ndim == 2:
        if bias is None:
            return _LinearAct.apply(x, weight, kind=kind, param=param)
        return _LinearAct.apply(x, weight, bias, kind=kind, param=param)
    y = _Linear.apply(x, weight) if bias is None else _Linear.apply(x, weight, bias)
    return y if kind is None else _apply_activation(y, kind, param)


def _apply_activation(y: Tensor, kind: str, param: float) -> Tensor:
    """The activation ``kind`` of the fused ops, applied as its own op."""
    from gpucnn.functional import activation as A

    if kind == "leaky_relu":
        return A.leaky_relu(y, param)
    if kind.startswith("gelu"):
        return A.gelu(y, "tanh" if kind == "gelu_tanh" else "none")
    return A.relu(y)


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
    shape = x.shape[:s] + (-1 if x.numel() else 0,) + x.shape[e + 1 :]
    if x.numel() == 0:
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
    """PyTorch-style ``permute(x, 0, 2, 3, 1)`` (or one tuple); e.g. NCHW → NHWC."""
    _tensor("permute", x)
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    if len(dims) != x.ndim:
        raise ValueError(
            f"permute: got {len(dims)} dims {tuple(dims)} for a {x.ndim}-D tensor {x.shape}"
        )
    try:
        return transpose(x, dims)
    except (TypeError, ValueError) as exc:
        raise type(exc)(str(exc).replace("transpose:", "permute:", 1)) from None


def unsqueeze(x: Tensor, dim: int | None = None, *, axis: int | None = None) -> Tensor:
    """``x`` with a new size-1 dimension at ``dim`` (or NumPy's ``axis``; in
    ``[-ndim-1, ndim]``, as PyTorch)."""
    _tensor("unsqueeze", x)
    dim = resolve_dim("unsqueeze", dim, axis)
    if dim is None:
        raise TypeError("unsqueeze: missing the dim argument")
    d = check_int("unsqueeze", "dim", dim)
    nd = x.ndim
    if not -nd - 1 <= d <= nd:
        raise ValueError(
            f"unsqueeze: dim {d} is out of range for a {nd}-D tensor {x.shape} (expected "
            f"{-nd - 1} <= dim <= {nd})"
        )
    d %= nd + 1
    return reshape(x, x.shape[:d] + (1,) + x.shape[d:])


def squeeze(x: Tensor, dim: Any = None, *, axis: Any = None) -> Tensor:
    """``x`` without size-1 dimensions: all of them (``dim=None``), or those of ``dim`` (or
    NumPy's ``axis``; an int or a tuple) that have size 1; a named dimension of another size
    is kept (PyTorch)."""
    _tensor("squeeze", x)
    dim = resolve_dim("squeeze", dim, axis)
    if dim is None:
        axes: tuple[int, ...] = tuple(range(x.ndim))
    else:
        axes = check_axes("squeeze", dim, x.ndim, "dim", x.shape)
    shape = tuple(n for i, n in enumerate(x.shape) if not (i in axes and n == 1))
    return reshape(x, shape)


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


def concat(tensors: Sequence[Tensor], axis: int = 1, *, dim: int | None = None) -> Tensor:
    """Join tensors along ``axis`` (or ``dim``; default 1: channels, for inception branches)."""
    axis = resolve_dim("concat", axis, dim, 1)
    if isinstance(tensors, Tensor):
        raise TypeError("concat: expected a list or tuple of Tensors, got one Tensor")
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


def cat(tensors: Sequence[Tensor], dim: int = 0, *, axis: int | None = None) -> Tensor:
    """PyTorch spelling of :func:`concat` (default ``dim=0``; ``axis=`` accepted too);
    differentiable, on either backend."""
    dim = resolve_dim("cat", dim, axis, 0)
    return concat(tensors, axis=dim)


def stack(tensors: Sequence[Tensor], axis: int = 0, *, dim: int | None = None) -> Tensor:
    """Join equally shaped tensors along a new ``axis`` (or ``dim``; default 0);
    differentiable, on either backend."""
    axis = resolve_dim("stack", axis, dim, 0)
    if isinstance(tensors, Tensor):
        raise TypeError("stack: expected a list or tuple of Tensors, got one Tensor")
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


def sum(  # noqa: A001
    x: Tensor, axis: Any = None, keepdims: bool = False, *, dim: Any = None,
    keepdim: bool | None = None,
) -> Tensor:
    """Sum over ``axis``/``dim`` (int, tuple or None for all); integers and bools sum to
    int64."""
    _tensor("sum", x)
    axis, keepdims = resolve_dim("sum", axis, dim), resolve_keepdim("sum", keepdims, keepdim)
    if x.dtype.kind not in "fiub" or x.dtype == np.float16:
        require_float("sum", x)
    return _Sum.apply(x, _axes(axis, x, "sum"), bool(keepdims))


def mean(
    x: Tensor, axis: Any = None, keepdims: bool = False, *, dim: Any = None,
    keepdim: bool | None = None,
) -> Tensor:
    """Mean over ``axis``/``dim`` (int, tuple or None for all); floating inputs only (as
    PyTorch)."""
    require_float("mean", _tensor("mean", x))
    axis, keepdims = resolve_dim("mean", axis, dim), resolve_keepdim("mean", keepdims, keepdim)
    axes = _axes(axis, x, "mean")
    n = 1
    for a in axes:
        n *= x.shape[a]
    # divide (not multiply by 1/n): the correctly rounded mean, as PyTorch and NumPy give
    return _Sum.apply(x, axes, keepdims) / float(builtins.max(n, 1))


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


class MaxResult(NamedTuple):
    """What :func:`max` returns for ``dim=`` (PyTorch's ``torch.return_types.max``)."""

    values: Tensor
    indices: Tensor


def max(  # noqa: A001
    x: Tensor, axis: Any = None, keepdims: bool = False, *, dim: int | None = None,
    keepdim: bool | None = None,
) -> Any:
    """Maximum over ``axis`` (int, tuple or None for all); the gradient is shared evenly
    between tied maxima (PyTorch's ``amax``).

    With ``dim=`` (an int) the result is PyTorch's ``max(x, dim)``: a :class:`MaxResult`
    ``(values, indices)``, the int64 indices of the first maximum (no gradient), and the
    values' gradient going to that element. ``axis=`` (or a positional axis) returns the
    values only, as NumPy and Keras.
    """
    _tensor("max", x)
    keepdims = resolve_keepdim("max", keepdims, keepdim)
    if dim is not None:
        resolve_dim("max", axis, dim)
        d = check_axis("max", dim, x.ndim, "dim", x.shape)
        if x.ndim and x.shape[d] == 0:
            raise ValueError(f"max: cannot reduce over an empty dim of the input {x.shape}")
        idx = argmax(x, d, keepdims=True)
        if x.ndim == 0:
            return MaxResult(x, idx)
        values = _MaxAlong.apply(x, idx.data, d)
        if not keepdims:
            values, idx = squeeze(values, d), squeeze(idx, d)
        return MaxResult(values, idx)
    axes = _axes(axis, x, "max")
    if any(x.shape[a] == 0 for a in axes):
        raise ValueError(f"max: cannot reduce over an empty axis of the input of shape {x.shape}")
    return _Max.apply(x, axes, bool(keepdims))


class _MaxAlong(Function):
    """Maximum along one axis (kept), the gradient going to the index ``idx`` only."""

    @staticmethod
    def forward(ctx: Context, a: Any, idx: Any, axis: int) -> Any:
        xp = _xp(a)
        shape = [1] * a.ndim
        shape[axis] = a.shape[axis]
        ctx.mask = xp.arange(a.shape[axis]).reshape(shape) == idx
        return a.max(axis=axis, keepdims=True)

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        return _xp(g).where(ctx.mask, g, g.dtype.type(0))


def argmax(
    x: Tensor, axis: int | None = None, keepdims: bool = False, *, dim: int | None = None,
    keepdim: bool | None = None,
) -> Tensor:
    """int64 indices of the first maximum along ``axis``/``dim`` (``None``: the index into the
    flattened tensor, as PyTorch and NumPy); not differentiable."""
    _tensor("argmax", x)
    axis, keepdims = resolve_dim("argmax", axis, dim), resolve_keepdim("argmax", keepdims, keepdim)
    if x.numel() == 0:
        raise ValueError(f"argmax: the input of shape {x.shape} is empty")
    xp = _xp(x.data)
    if axis is None:
        out = xp.asarray(x.data.argmax()).astype(np.int64)
        if keepdims:
            out = out.reshape((1,) * x.ndim)
        return Tensor(out)
    a = check_axis("argmax", axis, x.ndim, "dim", x.shape)
    if x.ndim == 0:
        return Tensor(xp.zeros((), dtype=np.int64))
    if x.shape[a] == 0:
        raise ValueError(f"argmax: cannot reduce over an empty dim of the input {x.shape}")
    out = x.data.argmax(axis=a).astype(np.int64, copy=False)
    if keepdims:
        out = xp.expand_dims(out, a)
    return Tensor(out)


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
