"""Loss functions (PyTorch semantics, any backend).

``cross_entropy`` with class-index targets is ONE fused primitive call forward
(``softmax_xent_forward``: log-softmax, per-row loss, label smoothing, ignore_index, class
weights) and ONE backward (``softmax_xent_backward``); on the CUDA backend these are the
kernels of ``cuda/softmax_xent.cu``. Probability targets use the log-softmax primitive. The
other losses are element-wise array code on the backend's ``xp``.

Reductions: ``"mean"`` (default), ``"sum"`` or ``"none"`` (per-element / per-sample losses).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucnn.backend import backend_of
from gpucnn.backend.device import is_device_array as _is_device_array
from gpucnn.tensor import Context, Function, Tensor

__all__ = [
    "cross_entropy",
    "nll_loss",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy",
    "mse_loss",
]

_REDUCTIONS = ("mean", "sum", "none")


# --------------------------------------------------------------------------- helpers


def _check_reduction(op: str, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _check_float(op: str, name: str, x: Any) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: {name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def _raw(be: Any, a: Any, dtype: Any = None) -> Any:
    """``a`` (Tensor, array, list or number) as an array of backend ``be``."""
    if isinstance(a, Tensor):
        a = a.data
    on_gpu = _is_device_array(a)
    if on_gpu != (be.name == "cuda"):
        a = be.asarray(a)
    return be.xp.asarray(a, dtype=dtype)


def _as_target_tensor(be: Any, t: Any, dtype: Any) -> Tensor:
    """A float target as a Tensor on ``be`` (keeps ``requires_grad`` of a Tensor target)."""
    if isinstance(t, Tensor):
        if t.backend != be.name:
            raise RuntimeError(
                f"target lives on the {t.backend} backend but the input on {be.name}; "
                f"move it with .to('{be.name}')"
            )
        return t
    return Tensor(_raw(be, t, dtype))


def _reduce(xp: Any, loss: Any, reduction: str, denom: Any = None) -> Any:
    if reduction == "none":
        return loss
    total = xp.asarray(loss.sum(dtype=loss.dtype))
    if reduction == "sum":
        return total
    n = loss.size if denom is None else denom
    with np.errstate(invalid="ignore", divide="ignore"):
        return xp.asarray(total / n).astype(loss.dtype, copy=False)


def _expand_grad(xp: Any, g: Any, shape: tuple, reduction: str, denom: Any = None) -> Any:
    """Upstream gradient of the reduced loss, per element of the unreduced ``shape``."""
    if reduction == "none":
        return g
    if reduction == "mean":
        n = int(np.prod(shape)) if denom is None else denom
        with np.errstate(invalid="ignore", divide="ignore"):
            g = g / n
    return xp.broadcast_to(g, shape)


# --------------------------------------------------------------------------- cross-entropy


class _CrossEntropyIndex(Function):
    """Fused softmax + cross-entropy with integer class targets."""

    @staticmethod
    def forward(
        ctx: Context,
        x: Any,
        target: Any,
        weight: Any,
        ignore_index: int,
        label_smoothing: float,
        reduction: str,
    ) -> Any:
        be = backend_of(x)
        loss, wrow, logp = be.softmax_xent_forward(x, target, weight, ignore_index, label_smoothing)
        denom = wrow.sum(dtype=wrow.dtype) if reduction == "mean" else None
        ctx.save_for_backward(logp, target, weight)
        ctx.args = (ignore_index, label_smoothing, reduction, denom, loss.shape)
        return _reduce(be.xp, loss, reduction, denom)

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        logp, target, weight = ctx.saved
        ignore_index, label_smoothing, reduction, denom, shape = ctx.args
        be = backend_of(logp)
        grow = _expand_grad(be.xp, g, shape, reduction, denom)
        return be.softmax_xent_backward(logp, target, weight, grow, ignore_index, label_smoothing)


class _CrossEntropyProb(Function):
    """Cross-entropy with class-probability targets (same shape as the logits)."""

    @staticmethod
    def forward(
        ctx: Context, x: Any, t: Any, weight: Any, label_smoothing: float, reduction: str
    ) -> Any:
        be = backend_of(x)
        xp = be.xp
        c = x.shape[1]
        logp = be.log_softmax_forward(x, 1)
        keep = 1.0 - label_smoothing
        ts = t * x.dtype.type(keep) + x.dtype.type(label_smoothing / c) if label_smoothing else t
        wb = None if weight is None else weight.reshape((1, c) + (1,) * (x.ndim - 2))
        tw = ts if wb is None else ts * wb
        loss = -(logp * tw).sum(axis=1)
        ctx.save_for_backward(logp, tw, wb)
        ctx.args = (keep, reduction, loss.shape)
        return _reduce(xp, loss, reduction)

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple:
        logp, tw, wb = ctx.saved
        keep, reduction, shape = ctx.args
        xp = backend_of(logp).xp
        grow = xp.expand_dims(_expand_grad(xp, g, shape, reduction), 1)
        dx = dt = None
        if ctx.needs_input_grad[0]:
            dx = grow * (xp.exp(logp) * tw.sum(axis=1, keepdims=True) - tw)
        if len(ctx.needs_input_grad) > 1 and ctx.needs_input_grad[1]:
            lw = logp if wb is None else logp * wb
            dt = -grow * lw * logp.dtype.type(keep)
        return dx, dt


def _class_weight(op: str, be: Any, weight: Any, c: int, dtype: Any) -> Any:
    if weight is None:
        return None
    w = _raw(be, weight, dtype)
    if tuple(w.shape) != (c,):
        raise ValueError(f"{op}: weight must have shape ({c},), got {tuple(w.shape)}")
    return w


def _index_target(op: str, be: Any, target: Any, expected: tuple, c: int, ignore: int) -> Any:
    t = _raw(be, target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"{op}: class-index target must be an integer array, got dtype {t.dtype}")
    if tuple(t.shape) != expected:
        raise ValueError(
            f"{op}: target shape {tuple(t.shape)} does not match the input; expected {expected}"
        )
    t = t.astype(be.xp.int64, copy=False)
    bad = (t != ignore) & ((t < 0) | (t >= c))
    if bool(bad.any()):
        value = int(t[bad].reshape(-1)[0])
        raise ValueError(
            f"{op}: target value {value} is out of range; class indices must be in "
            f"[0, {c - 1}] (or ignore_index={ignore})"
        )
    return t


def cross_entropy(
    logits: Tensor,
    target: Any,
    weight: Any = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> Tensor:
    """Softmax cross-entropy, PyTorch's ``F.cross_entropy``.

    Args:
        logits: ``(N, C)``, ``(N, C, d1, ...)`` or unbatched ``(C,)``; classes on axis 1.
        target: integer class indices ``(N,)`` / ``(N, d1, ...)`` (int32 or int64), or float
            class probabilities with the logits' shape (differentiable).
        weight: class weights ``(C,)`` or ``None``.
        ignore_index: index targets equal to it add nothing (loss and normaliser).
        label_smoothing: ``eps`` in [0, 1]: the target becomes ``(1 - eps) * onehot + eps / C``.
        reduction: ``"mean"`` (divided by the summed target weights for index targets, by the
            number of rows for probabilities), ``"sum"`` or ``"none"`` (target's shape).

    Returns:
        The loss: a scalar tensor, or per-row losses for ``reduction="none"``.
    """
    op = "cross_entropy"
    _check_float(op, "input", logits)
    _check_reduction(op, reduction)
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing}")
    if logits.ndim == 0:
        raise ValueError(f"{op}: input must be (C,), (N, C) or (N, C, d1, ...), got a scalar")
    be = backend_of(logits.data)
    unbatched = logits.ndim == 1
    x = logits
    if unbatched:
        from gpucnn.functional.basic import reshape

        x = reshape(logits, (1, logits.shape[0]))
    c = x.shape[1]
    w = _class_weight(op, be, weight, c, x.dtype)
    is_prob = isinstance(target, Tensor) and target.dtype.kind == "f"
    if not is_prob and not isinstance(target, Tensor):
        is_prob = _raw(be, target).dtype.kind == "f"
    if is_prob:
        t = _as_target_tensor(be, target, x.dtype)
        if t.shape != logits.shape:
            raise ValueError(
                f"{op}: probability target shape {t.shape} must equal the input shape "
                f"{logits.shape}"
            )
        if t.dtype != x.dtype:
            t = t.astype(x.dtype)
        if unbatched:
            from gpucnn.functional.basic import reshape

            t = reshape(t, x.shape)
        out = _CrossEntropyProb.apply(x, t, w, float(label_smoothing), reduction)
    else:
        expected = x.shape[:1] + x.shape[2:]
        tt = _raw(be, target)
        if unbatched:
            if tt.ndim != 0:
                raise ValueError(
                    f"{op}: target shape {tuple(tt.shape)} does not match the unbatched input "
                    f"{logits.shape}; expected ()"
                )
            tt = tt.reshape(1)
        t = _index_target(op, be, tt, expected, c, int(ignore_index))
        out = _CrossEntropyIndex.apply(
            x, t, w, int(ignore_index), float(label_smoothing), reduction
        )
    if unbatched and reduction == "none":
        from gpucnn.functional.basic import reshape

        out = reshape(out, ())
    return out


# --------------------------------------------------------------------------- nll


class _NLL(Function):
    @staticmethod
    def forward(
        ctx: Context, lp: Any, target: Any, weight: Any, ignore_index: int, reduction: str
    ) -> Any:
        xp = backend_of(lp).xp
        c = lp.shape[1]
        valid = target != ignore_index
        tc = xp.where(valid, target, 0)
        w = xp.ones(c, dtype=lp.dtype) if weight is None else weight
        wt = xp.where(valid, w[tc], lp.dtype.type(0))
        lpt = xp.take_along_axis(lp, xp.expand_dims(tc, 1), axis=1).squeeze(1)
        loss = xp.where(valid, -wt * lpt, lp.dtype.type(0))
        denom = wt.sum(dtype=wt.dtype) if reduction == "mean" else None
        ctx.save_for_backward(tc, wt)
        ctx.args = (reduction, denom, lp.shape)
        return _reduce(xp, loss, reduction, denom)

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        tc, wt = ctx.saved
        reduction, denom, shape = ctx.args
        xp = backend_of(wt).xp
        grow = _expand_grad(xp, g, wt.shape, reduction, denom)
        c = shape[1]
        classes = xp.arange(c).reshape((1, c) + (1,) * (len(shape) - 2))
        onehot = classes == xp.expand_dims(tc, 1)
        return xp.where(onehot, xp.expand_dims(-wt * grow, 1), wt.dtype.type(0))


def nll_loss(
    log_probs: Tensor,
    target: Any,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Negative log-likelihood ``-weight[t] * log_probs[n, t]``, PyTorch's ``F.nll_loss``.

    ``log_probs`` is ``(N, C)`` or ``(N, C, d1, ...)``; ``target`` integer ``(N,)`` /
    ``(N, d1, ...)``. ``"mean"`` divides by the summed weights of the non-ignored targets.
    """
    op = "nll_loss"
    _check_float(op, "input", log_probs)
    _check_reduction(op, reduction)
    if log_probs.ndim < 2:
        raise ValueError(
            f"{op}: input must be (N, C) or (N, C, d1, ...), got shape {log_probs.shape}"
        )
    be = backend_of(log_probs.data)
    c = log_probs.shape[1]
    w = _class_weight(op, be, weight, c, log_probs.dtype)
    expected = log_probs.shape[:1] + log_probs.shape[2:]
    t = _index_target(op, be, target, expected, c, int(ignore_index))
    return _NLL.apply(log_probs, t, w, int(ignore_index), reduction)


# --------------------------------------------------------------------------- binary


def _stable_sigmoid(xp: Any, x: Any) -> Any:
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


class _BCEWithLogits(Function):
    @staticmethod
    def forward(ctx: Context, x: Any, t: Any, weight: Any, pos_weight: Any, reduction: str) -> Any:
        xp = backend_of(x).xp
        # softplus(-x) = -log(sigmoid(x)) = max(-x, 0) + log1p(exp(-|x|)): never overflows.
        sp = xp.maximum(-x, 0) + xp.log1p(xp.exp(-xp.abs(x)))
        if pos_weight is None:
            loss = xp.maximum(x, 0) - x * t + xp.log1p(xp.exp(-xp.abs(x)))
            lw = None
        else:
            lw = 1 + (pos_weight - 1) * t
            loss = (1 - t) * x + lw * sp
        if weight is not None:
            loss = loss * weight
        loss = loss.astype(x.dtype, copy=False)
        ctx.save_for_backward(x, t, weight, pos_weight, lw, sp)
        ctx.args = (reduction, loss.shape)
        return _reduce(xp, loss, reduction)

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple:
        x, t, weight, pos_weight, lw, sp = ctx.saved
        reduction, shape = ctx.args
        xp = backend_of(x).xp
        ge = _expand_grad(xp, g, shape, reduction)
        if weight is not None:
            ge = ge * weight
        dx = dt = None
        if ctx.needs_input_grad[0]:
            sig = _stable_sigmoid(xp, x)
            d = sig - t if lw is None else (1 - t) - lw * (1 - sig)
            dx = (ge * d).astype(x.dtype, copy=False)
        if len(ctx.needs_input_grad) > 1 and ctx.needs_input_grad[1]:
            d = -x if pos_weight is None else -x + (pos_weight - 1) * sp
            dt = (ge * d).astype(x.dtype, copy=False)
        return dx, dt


def _broadcast_param(op: str, name: str, be: Any, p: Any, shape: tuple, dtype: Any) -> Any:
    if p is None:
        return None
    a = _raw(be, p, dtype)
    try:
        np.broadcast_shapes(tuple(a.shape), shape)
    except ValueError:
        raise ValueError(
            f"{op}: {name} of shape {tuple(a.shape)} does not broadcast to the input {shape}"
        ) from None
    if np.broadcast_shapes(tuple(a.shape), shape) != shape:
        raise ValueError(f"{op}: {name} of shape {tuple(a.shape)} would enlarge the input {shape}")
    return a


def _same_shape_target(op: str, be: Any, x: Tensor, target: Any) -> Tensor:
    t = _as_target_tensor(be, target, x.dtype)
    if t.shape != x.shape:
        raise ValueError(f"{op}: target shape {t.shape} must equal the input shape {x.shape}")
    if t.dtype != x.dtype:
        t = t.astype(x.dtype)
    return t


def binary_cross_entropy_with_logits(
    logits: Tensor,
    target: Any,
    pos_weight: Any = None,
    reduction: str = "mean",
    weight: Any = None,
) -> Tensor:
    """Sigmoid + binary cross-entropy in one stable formula (PyTorch's
    ``F.binary_cross_entropy_with_logits``): ``max(x, 0) - x t + log1p(exp(-|x|))``.

    ``target`` has the input's shape (values in [0, 1], differentiable); ``pos_weight``
    (e.g. ``(C,)`` for the last axis) scales the positive term; ``weight`` scales each element.
    Both broadcast to the input and are constants (no gradient).
    """
    op = "binary_cross_entropy_with_logits"
    _check_float(op, "input", logits)
    _check_reduction(op, reduction)
    be = backend_of(logits.data)
    t = _same_shape_target(op, be, logits, target)
    pw = _broadcast_param(op, "pos_weight", be, pos_weight, logits.shape, logits.dtype)
    w = _broadcast_param(op, "weight", be, weight, logits.shape, logits.dtype)
    return _BCEWithLogits.apply(logits, t, w, pw, reduction)


class _BCE(Function):
    @staticmethod
    def forward(ctx: Context, p: Any, t: Any, weight: Any, reduction: str) -> Any:
        xp = backend_of(p).xp
        with np.errstate(divide="ignore"):
            logp = xp.maximum(xp.log(p), -100)
            log1mp = xp.maximum(xp.log1p(-p), -100)
        loss = -(t * logp + (1 - t) * log1mp)
        if weight is not None:
            loss = loss * weight
        loss = loss.astype(p.dtype, copy=False)
        ctx.save_for_backward(p, t, weight, logp, log1mp)
        ctx.args = (reduction, loss.shape)
        return _reduce(xp, loss, reduction)

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple:
        p, t, weight, logp, log1mp = ctx.saved
        reduction, shape = ctx.args
        xp = backend_of(p).xp
        ge = _expand_grad(xp, g, shape, reduction)
        if weight is not None:
            ge = ge * weight
        dp = dt = None
        if ctx.needs_input_grad[0]:
            # PyTorch's rule: (p - t) / max(p (1 - p), 1e-12).
            dp = (ge * (p - t) / xp.maximum(p * (1 - p), 1e-12)).astype(p.dtype, copy=False)
        if len(ctx.needs_input_grad) > 1 and ctx.needs_input_grad[1]:
            dt = (ge * (log1mp - logp)).astype(p.dtype, copy=False)
        return dp, dt


def binary_cross_entropy(
    probs: Tensor, target: Any, reduction: str = "mean", weight: Any = None
) -> Tensor:
    """``-(t log p + (1 - t) log(1 - p))`` with each log clamped at -100 (PyTorch's
    ``F.binary_cross_entropy``). ``probs`` in [0, 1]; ``target`` of the same shape
    (differentiable); ``weight`` broadcasts to the input (constant)."""
    op = "binary_cross_entropy"
    _check_float(op, "input", probs)
    _check_reduction(op, reduction)
    be = backend_of(probs.data)
    t = _same_shape_target(op, be, probs, target)
    d = probs.data
    if bool(((d < 0) | (d > 1)).any()):
        bad = float(d[(d < 0) | (d > 1)].reshape(-1)[0])
        raise ValueError(
            f"{op}: input values must be probabilities in [0, 1], got {bad} "
            "(use binary_cross_entropy_with_logits on raw scores)"
        )
    w = _broadcast_param(op, "weight", be, weight, probs.shape, probs.dtype)
    return _BCE.apply(probs, t, w, reduction)


# --------------------------------------------------------------------------- regression


class _MSE(Function):
    @staticmethod
    def forward(ctx: Context, x: Any, t: Any, reduction: str) -> Any:
        xp = backend_of(x).xp
        diff = x - t
        ctx.save_for_backward(diff)
        ctx.args = (reduction, diff.shape)
        return _reduce(xp, diff * diff, reduction)

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple:
        (diff,) = ctx.saved
        reduction, shape = ctx.args
        xp = backend_of(diff).xp
        d = (2 * _expand_grad(xp, g, shape, reduction) * diff).astype(diff.dtype, copy=False)
        need = ctx.needs_input_grad
        return (d if need[0] else None), (-d if len(need) > 1 and need[1] else None)


def mse_loss(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:  # noqa: A002
    """Mean squared error ``(input - target)^2``; ``target`` has the input's shape
    (differentiable)."""
    op = "mse_loss"
    _check_float(op, "input", input)
    _check_reduction(op, reduction)
    be = backend_of(input.data)
    t = _same_shape_target(op, be, input, target)
    return _MSE.apply(input, t, reduction)
