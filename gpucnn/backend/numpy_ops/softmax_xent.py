"""NumPy twins of ``cuda/softmax_xent.cu``: softmax, log-softmax and fused cross-entropy.

Same names and signatures as :mod:`gpucnn.backend.cuda_ops.softmax_xent`. Softmax runs over
``axis`` of an array of any shape; cross-entropy takes logits ``(N, C)`` or ``(N, C, d1, ...)``
(classes on axis 1) and integer targets ``(N,)`` or ``(N, d1, ...)``. All reductions subtract
the row maximum first (stable for logits of any magnitude) and propagate NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "softmax_forward",
    "log_softmax_forward",
    "softmax_backward",
    "log_softmax_backward",
    "softmax_xent_forward",
    "softmax_xent_backward",
]


def _max_sum(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Row max (NaN-propagating, keepdims) and ``exp(x - max)``."""
    m = np.max(x, axis=axis, keepdims=True)
    # A row of all -inf (or +inf) would give inf - inf = NaN; PyTorch gives NaN too.
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(x - m)
    return m, e


def softmax_forward(x: Any, axis: int = -1) -> Any:
    """``exp(x - max) / sum(exp(x - max))`` along ``axis``; same shape and dtype as ``x``.

    Twin of kernel ``softmax_fwd_f32/_f64``.
    """
    x = np.asarray(x)
    _, e = _max_sum(x, axis)
    with np.errstate(invalid="ignore"):
        y = e / e.sum(axis=axis, keepdims=True)
    return np.ascontiguousarray(y, dtype=x.dtype)


def log_softmax_forward(x: Any, axis: int = -1) -> Any:
    """``x - max - log(sum(exp(x - max)))`` along ``axis``; same shape and dtype as ``x``.

    Twin of kernel ``log_softmax_fwd_f32/_f64``.
    """
    x = np.asarray(x)
    m, e = _max_sum(x, axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        y = x - (m + np.log(e.sum(axis=axis, keepdims=True)))
    return np.ascontiguousarray(y, dtype=x.dtype)


def softmax_backward(y: Any, g: Any, axis: int = -1) -> Any:
    """``dx = y * (g - sum(g * y))`` along ``axis``, ``y`` the softmax output.

    Twin of kernel ``softmax_bwd_f32/_f64``.
    """
    y = np.asarray(y)
    g = np.asarray(g, dtype=y.dtype)
    dx = y * (g - (g * y).sum(axis=axis, keepdims=True))
    return np.ascontiguousarray(dx, dtype=y.dtype)


def log_softmax_backward(y: Any, g: Any, axis: int = -1) -> Any:
    """``dx = g - exp(y) * sum(g)`` along ``axis``, ``y`` the log-softmax output.

    Twin of kernel ``log_softmax_bwd_f32/_f64``.
    """
    y = np.asarray(y)
    g = np.asarray(g, dtype=y.dtype)
    dx = g - np.exp(y) * g.sum(axis=axis, keepdims=True)
    return np.ascontiguousarray(dx, dtype=y.dtype)


def _class_bcast(v: np.ndarray, ndim: int) -> np.ndarray:
    """A (C,) vector shaped to broadcast along axis 1 of an ``ndim``-D array."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _xent_common(
    logits_shape: tuple, target: Any, weight: Any, ignore_index: int, dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    c = int(logits_shape[1])
    t = np.asarray(target).astype(np.int64, copy=False)
    valid = t != ignore_index
    inrange = valid & (t >= 0) & (t < c)
    tc = np.where(inrange, t, 0)
    w = np.ones(c, dtype=dtype) if weight is None else np.asarray(weight, dtype=dtype)
    return valid, inrange, tc, w


def softmax_xent_forward(
    logits: Any,
    target: Any,
    weight: Any = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    err: Any = None,
) -> tuple[Any, Any, Any]:
    """Fused softmax + cross-entropy with class-index targets, per row (no reduction).

    Args:
        logits: ``(N, C)`` or ``(N, C, d1, ...)``, classes on axis 1.
        target: integer class indices, ``(N,)`` or ``(N, d1, ...)``.
        weight: class weights ``(C,)`` or ``None`` (all ones).
        ignore_index: rows with this target get loss 0 and weight 0.
        label_smoothing: ``eps`` in [0, 1].
        err: ``None``, or the range check: an int64 array ``[smallest bad target, count]``
            (start from ``[INT64_MAX, 0]``) updated in place: ``err[0]`` is lowered to the
            smallest target outside ``[0, C)`` that is not ``ignore_index``, ``err[1]`` grows
            by their number. It accumulates across calls (the kernel does the same with
            atomics, so the host can read it later instead of syncing on every call).

    Returns:
        ``(loss, wrow, logp)``: ``loss[r] = -(1 - eps) w[t] logp[r, t] - eps / C *
        sum_c w[c] logp[r, c]`` (target's shape), ``wrow[r] = w[t]`` (0 where ignored; the
        ``'mean'`` normaliser is ``wrow.sum()``), ``logp`` the log-softmax (logits' shape).
        A target outside ``[0, C)`` that is not ``ignore_index`` gives NaN (callers check).

    Twin of kernel ``softmax_xent_fwd_f32/_f64``.
    """
    x = np.asarray(logits)
    dt = x.dtype
    c = int(x.shape[1])
    valid, inrange, tc, w = _xent_common(x.shape, target, weight, ignore_index, dt)
    logp = log_softmax_forward(x, axis=1)
    eps = dt.type(label_smoothing)
    lpt = np.take_along_axis(logp, np.expand_dims(tc, 1), axis=1).squeeze(1)
    wt = w[tc]
    loss = -(dt.type(1) - eps) * wt * lpt
    if label_smoothing != 0:
        loss = loss - eps / dt.type(c) * (logp * _class_bcast(w, x.ndim)).sum(axis=1)
    loss = np.where(inrange, loss, np.where(valid, dt.type(np.nan), dt.type(0)))
    wrow = np.where(inrange, wt, dt.type(0))
    if err is not None:
        bad = valid & ~inrange
        nbad = int(np.count_nonzero(bad))
        if nbad:
            t = np.asarray(target).astype(np.int64, copy=False)
            err[0] = min(int(err[0]), int(t[bad].min()))
            err[1] += nbad
    return (
        np.ascontiguousarray(loss, dtype=dt),
        np.ascontiguousarray(wrow, dtype=dt),
        logp,
    )


def softmax_xent_backward(
    logp: Any,
    target: Any,
    weight: Any,
    grow: Any,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
) -> Any:
    """Gradient of the per-row loss of :func:`softmax_xent_forward` w.r.t. the logits.

    ``dx[r, c] = grow[r] * (p[r, c] ((1 - eps) w[t] + eps / C * sum(w)) - (1 - eps) w[t] [c == t]
    - eps / C * w[c])`` with ``p = exp(logp)``; 0 on ignored rows. ``grow`` (target's shape)
    is the upstream gradient per row, already divided by any ``'mean'`` normaliser.

    Twin of kernel ``softmax_xent_bwd_f32/_f64``.
    """
    lp = np.asarray(logp)
    dt = lp.dtype
    c = int(lp.shape[1])
    _, inrange, tc, w = _xent_common(lp.shape, target, weight, ignore_index, dt)
    eps = dt.type(label_smoothing)
    keep = dt.type(1) - eps
    spread = eps / dt.type(c)
    wt = w[tc]
    coef = keep * wt + spread * w.sum(dtype=dt)
    d = np.exp(lp) * np.expand_dims(coef, 1) - spread * _class_bcast(w, lp.ndim)
    onehot = np.arange(c).reshape(_class_bcast(w, lp.ndim).shape) == np.expand_dims(tc, 1)
    d = d - np.where(onehot, np.expand_dims(keep * wt, 1), dt.type(0))
    g = np.asarray(grow, dtype=dt)
    dx = np.where(np.expand_dims(inrange, 1), d * np.expand_dims(g, 1), dt.type(0))
    return np.ascontiguousarray(dx, dtype=dt)
