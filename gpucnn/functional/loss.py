"""Loss functions (PyTorch semantics, any backend).

``cross_entropy`` with class-index targets is ONE fused primitive call forward
(``softmax_xent_forward``: log-softmax, per-row loss, label smoothing, ignore_index, class
weights) and ONE backward (``softmax_xent_backward``); on the CUDA backend these are the
kernels of ``cuda/softmax_xent.cu``. Probability targets use the log-softmax primitive. The
other losses are element-wise array code on the backend's ``xp``.

Reductions: ``"mean"`` (default), ``"sum"`` or ``"none"`` (per-element / per-sample losses).

Input checks without a host sync: host (NumPy) class-index targets are range-checked at once,
before any upload. Targets already on the device are checked ON the device: the fused
kernel (or, for ``nll_loss``, a few array ops) records the smallest out-of-range target and
their count in a small device buffer, and the ``ValueError`` (naming the op, the valid range
and the bad value) is raised at the next host read of a loss value: ``item()``, ``numpy()``,
``tolist()`` or ``repr`` of the returned loss, or :func:`read_host`, the read point of
``Model.fit``/``evaluate``. As with PyTorch on CUDA, which reports such targets
asynchronously, the error can therefore come a few steps after the bad batch (the rows with
a bad target get loss NaN and no gradient meanwhile). ``binary_cross_entropy``'s
probability-range check on device inputs works the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gpucnn._checks import check_int, check_number
from gpucnn.backend import backend_of, to_numpy
from gpucnn.backend.device import array_module as _array_module
from gpucnn.backend.device import is_device_array as _is_device_array
from gpucnn.functional._dtypes import require_float
from gpucnn.tensor import Context, Function, Tensor

__all__ = [
    "cross_entropy",
    "nll_loss",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy",
    "mse_loss",
    "huber_loss",
    "kl_div",
]

_REDUCTIONS = ("mean", "sum", "none")
_INT64_MAX = int(np.iinfo(np.int64).max)

#: Test hook: treat host (NumPy) inputs like device inputs, so the deferred, device-side
#: checks run (and are read at the next host read point) instead of the immediate host check.
_DEFER_HOST_CHECKS = False


# --------------------------------------------------------------------------- deferred checks


def defers(a: Any) -> bool:
    """Whether input checks on array ``a`` are deferred to the next host read (device arrays;
    every array under the ``_DEFER_HOST_CHECKS`` test hook) rather than done at once."""
    return _DEFER_HOST_CHECKS or _is_device_array(a)


def _device_key(a: Any) -> Any:
    dev = getattr(a, "device", None)
    return getattr(dev, "id", dev if isinstance(dev, (str, int)) else None)


class _DeferredCheck:
    """A small buffer next to the data that a device-side check writes into; the host reads it
    (with other values, in one transfer) at the next host read point."""

    __slots__ = ("buf", "init", "describe", "dirty")

    def __init__(self, xp: Any, init: tuple, dtype: Any,
                 describe: Callable[[np.ndarray], str | None]) -> None:
        self.init = init
        self.buf = xp.asarray(np.array(init, dtype=dtype))  # uploaded once, then reused
        self.describe = describe
        self.dirty = False

    def reset(self) -> None:
        for i, v in enumerate(self.init):
            self.buf[i] = v


_checks: dict[tuple, _DeferredCheck] = {}
_checks_lock = threading.Lock()


def _deferred_check(key: tuple, like: Any, init: tuple, dtype: Any,
                    describe: Callable[[np.ndarray], str | None]) -> _DeferredCheck:
    """The check buffer for ``key`` on ``like``'s device (created once), marked to be read."""
    xp = _array_module(like)
    full = (*key, id(xp), _device_key(like))
    with _checks_lock:
        chk = _checks.get(full)
        if chk is None:
            chk = _checks[full] = _DeferredCheck(xp, init, dtype, describe)
        chk.dirty = True
    return chk


def _fetch(arrays: Sequence[Any]) -> list[np.ndarray]:
    """Host copies of ``arrays``: all device arrays of one device in ONE transfer (packed as
    8-byte words: floats through float64, integers and bools through int64, both exact)."""
    out: list[Any] = [None] * len(arrays)
    groups: dict[Any, list[int]] = {}
    for i, a in enumerate(arrays):
        if _is_device_array(a) and a.dtype.kind in "fiub":
            groups.setdefault(_device_key(a), []).append(i)
        else:
            out[i] = to_numpy(a) if _is_device_array(a) else np.asarray(a)
    for idx in groups.values():
        xp = _array_module(arrays[idx[0]])
        parts = []
        for i in idx:
            a = arrays[i].reshape(-1)
            if a.dtype.kind == "f":
                parts.append(a.astype(xp.float64, copy=False).view(xp.int64))
            else:
                parts.append(a.astype(xp.int64, copy=False))
        host = to_numpy(parts[0] if len(parts) == 1 else xp.concatenate(parts))
        pos = 0
        for i in idx:
            a = arrays[i]
            chunk = host[pos : pos + a.size]
            pos += a.size
            if a.dtype.kind == "f":
                chunk = chunk.view(np.float64)
            out[i] = chunk.astype(a.dtype, copy=False).reshape(a.shape)
    return out


def read_host(values: Sequence[Any] = ()) -> list[np.ndarray]:
    """Host (NumPy) copies of ``values`` (arrays of either backend, or numbers), read together
    with every pending deferred input check in one device-to-host transfer per device.

    This is where deferred check errors surface: after the read, a failed check raises its
    ``ValueError`` (and is reset, so the next read starts clean). Free for host values.
    """
    with _checks_lock:
        pending = [c for c in _checks.values() if c.dirty]
    host = _fetch([*values, *(c.buf for c in pending)])
    errors = []
    for chk, h in zip(pending, host[len(values) :]):
        chk.dirty = False
        msg = chk.describe(h)
        if msg:
            chk.reset()
            errors.append(msg)
    if errors:
        raise ValueError("; ".join(errors))
    return host[: len(values)]


class _CheckedLoss(Tensor):
    """A loss whose inputs are still being checked on the device: reading its value on the host
    reads the checks in the same transfer and raises their error instead of returning."""

    def numpy(self) -> np.ndarray:
        return read_host([self.data])[0]

    def item(self) -> float:
        if self.numel() != 1:
            raise ValueError(f"item(): tensor has {self.numel()} elements, expected 1")
        return self.numpy().reshape(()).item()

    def tolist(self) -> Any:
        return self.numpy().tolist()

    def __repr__(self) -> str:
        read_host()
        return super().__repr__()


def _checked(out: Tensor, check: _DeferredCheck | None) -> Tensor:
    if check is not None and type(out) is Tensor:
        out.__class__ = _CheckedLoss
    return out


def _target_range_message(op: str, c: int, ignore: int, value: int) -> str:
    return (
        f"{op}: target value {value} is out of range; class indices must be in "
        f"[0, {c - 1}] (or ignore_index={ignore})"
    )


def _target_check(op: str, t: Any, c: int, ignore: int) -> _DeferredCheck:
    """The device-side range check of class-index targets ``t``: int64 ``[smallest bad target,
    number of bad targets]``, reset to ``[INT64_MAX, 0]``."""

    def describe(h: np.ndarray) -> str | None:
        n = int(h[1])
        if n == 0:
            return None
        return (f"{_target_range_message(op, c, ignore, int(h[0]))}; {n} such target(s), "
                "found by the device-side check since the previous host read")

    return _deferred_check(("targets", op, int(c), int(ignore)), t, (_INT64_MAX, 0), np.int64,
                           describe)


def check_integer_targets(op: str, t: Any) -> None:
    """Float class-index targets ``t`` must hold whole numbers: checked at once on the host,
    on the device for device arrays (reported at the next host read, see the module doc)."""
    if t.dtype.kind != "f" or t.size == 0:
        return
    if not defers(t):
        if (t != np.round(t)).any():
            raise ValueError(
                f"{op}: labels must be integer class ids, got non-integer values (dtype {t.dtype})"
            )
        return
    dtype = t.dtype

    def describe(h: np.ndarray) -> str | None:
        if int(h[0]) == 0:
            return None
        return (f"{op}: labels must be integer class ids, got non-integer values (dtype "
                f"{dtype}); {int(h[0])} such label(s), found by the device-side check since "
                "the previous host read")

    chk = _deferred_check(("integer", op, dtype.str), t, (0,), np.int64, describe)
    xp = _array_module(t)
    xp.add(chk.buf, (t != t.round()).sum(dtype=xp.int64), out=chk.buf)


def _record_bad_targets(xp: Any, t: Any, c: int, ignore: int, buf: Any) -> None:
    """Array-op twin of the kernel's range check (for ops without a fused kernel)."""
    if t.size == 0:
        return
    bad = (t != ignore) & ((t < 0) | (t >= c))
    n, lo = buf[1:], buf[:1]
    xp.add(n, bad.sum(dtype=xp.int64), out=n)
    xp.minimum(lo, xp.where(bad, t, _INT64_MAX).min(), out=lo)


# --------------------------------------------------------------------------- helpers


def _check_reduction(op: str, reduction: str) -> None:
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _check_float(op: str, name: str, x: Any) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(x).__name__}")
    return require_float(op, x, name)


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
        if getattr(n, "dtype", loss.dtype) == loss.dtype:  # same arithmetic, in place
            return xp.divide(total, n, out=total)
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
        err: Any = None,
    ) -> Any:
        be = backend_of(x)
        loss, wrow, logp = be.softmax_xent_forward(
            x, target, weight, ignore_index, label_smoothing, err
        )
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


def _target_array(be: Any, target: Any) -> Any:
    """``target`` as an array without moving it yet: device arrays stay where they are when
    ``be`` is cuda; everything else becomes a host array (so checks on it are free)."""
    if isinstance(target, Tensor):
        target = target.data
    if _is_device_array(target):
        return target if be.name == "cuda" else to_numpy(target)
    return np.asarray(target)


def _index_target(
    op: str, be: Any, target: Any, expected: tuple, c: int, ignore: int
) -> tuple[Any, _DeferredCheck | None]:
    """Validated int64 class-index targets on ``be``, and the deferred range check still to be
    recorded on the device (``None`` when the targets were checked on the host here)."""
    t = _target_array(be, target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"{op}: class-index target must be an integer array, got dtype {t.dtype}")
    if tuple(t.shape) != expected:
        raise ValueError(
            f"{op}: target shape {tuple(t.shape)} does not match the input; expected {expected}"
        )
    if not defers(t):  # host targets: checked now, before the upload, at no cost
        t = t.astype(np.int64, copy=False)
        bad = (t != ignore) & ((t < 0) | (t >= c))
        if bad.any():
            raise ValueError(_target_range_message(op, c, ignore, int(t[bad].reshape(-1)[0])))
        return _raw(be, t), None
    t = _raw(be, t).astype(be.xp.int64, copy=False)
    return t, _target_check(op, t, c, ignore)


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
    label_smoothing = check_number(op, "label_smoothing", label_smoothing, 0.0, 1.0)
    ignore_index = check_int(op, "ignore_index", ignore_index)
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
    if isinstance(target, Tensor):
        is_prob = target.dtype.kind == "f"
    else:
        target = _target_array(be, target)  # no upload yet: integer targets are checked first
        is_prob = target.dtype.kind == "f"
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
        tt = _target_array(be, target)
        if unbatched:
            if tt.ndim != 0:
                raise ValueError(
                    f"{op}: target shape {tuple(tt.shape)} does not match the unbatched input "
                    f"{logits.shape}; expected ()"
                )
            tt = tt.reshape(1)
        t, check = _index_target(op, be, tt, expected, c, int(ignore_index))
        out = _CrossEntropyIndex.apply(
            x, t, w, int(ignore_index), float(label_smoothing), reduction,
            None if check is None else check.buf,
        )
        if unbatched and reduction == "none":
            from gpucnn.functional.basic import reshape

            out = reshape(out, ())
        return _checked(out, check)
    if unbatched and reduction == "none":
        from gpucnn.functional.basic import reshape

        out = reshape(out, ())
    return out


# --------------------------------------------------------------------------- nll


class _NLL(Function):
    @staticmethod
    def forward(
        ctx: Context, lp: Any, target: Any, weight: Any, ignore_index: int, reduction: str,
        unchecked: bool = False,
    ) -> Any:
        xp = backend_of(lp).xp
        c = lp.shape[1]
        valid = target != ignore_index
        ok = valid & (target >= 0) & (target < c) if unchecked else valid
        tc = xp.where(ok, target, 0)
        w = xp.ones(c, dtype=lp.dtype) if weight is None else weight
        wt = xp.where(ok, w[tc], lp.dtype.type(0))
        lpt = xp.take_along_axis(lp, xp.expand_dims(tc, 1), axis=1).squeeze(1)
        loss = xp.where(ok, -wt * lpt, lp.dtype.type(0))
        if unchecked:  # a bad target (still to be reported) gives NaN, as the fused kernel
            loss = xp.where(valid & ~ok, lp.dtype.type(np.nan), loss)
        denom = wt.sum(dtype=wt.dtype) if reduction == "mean" else None
        ctx.save_for_backward(tc, wt, ok)
        ctx.args = (reduction, denom, lp.shape)
        return _reduce(xp, loss, reduction, denom)

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        tc, wt, ok = ctx.saved
        reduction, denom, shape = ctx.args
        xp = backend_of(wt).xp
        grow = _expand_grad(xp, g, wt.shape, reduction, denom)
        c = shape[1]
        classes = xp.arange(c).reshape((1, c) + (1,) * (len(shape) - 2))
        # Ignored targets get exactly 0 (PyTorch): with every target ignored the mean's
        # normaliser is 0 and -0 * g / 0 would be NaN. Non-ignored zero-weight rows keep
        # PyTorch's NaN (0 / 0).
        onehot = (classes == xp.expand_dims(tc, 1)) & xp.expand_dims(ok, 1)
        with np.errstate(invalid="ignore"):
            gl = -wt * grow
        return xp.where(onehot, xp.expand_dims(gl, 1), wt.dtype.type(0))


def nll_loss(
    log_probs: Tensor,
    target: Any,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Negative log-likelihood ``-weight[t] * log_probs[n, t]``, PyTorch's ``F.nll_loss``.

    ``log_probs`` is ``(N, C)``, ``(N, C, d1, ...)`` or unbatched ``(C,)``; ``target`` integer
    ``(N,)`` / ``(N, d1, ...)`` / ``()``. ``"mean"`` divides by the summed weights of the
    non-ignored targets.
    """
    op = "nll_loss"
    _check_float(op, "input", log_probs)
    _check_reduction(op, reduction)
    ignore_index = check_int(op, "ignore_index", ignore_index)
    if log_probs.ndim < 1:
        raise ValueError(
            f"{op}: input must be (C,), (N, C) or (N, C, d1, ...), got shape {log_probs.shape}"
        )
    be = backend_of(log_probs.data)
    unbatched = log_probs.ndim == 1
    x = log_probs
    if unbatched:
        from gpucnn.functional.basic import reshape

        x = reshape(log_probs, (1, log_probs.shape[0]))
        target = _target_array(be, target)
        if target.ndim != 0:
            raise ValueError(
                f"{op}: target shape {tuple(target.shape)} does not match the unbatched input "
                f"{log_probs.shape}; expected ()"
            )
        target = target.reshape(1)
    c = x.shape[1]
    w = _class_weight(op, be, weight, c, x.dtype)
    expected = x.shape[:1] + x.shape[2:]
    t, check = _index_target(op, be, target, expected, c, int(ignore_index))
    if check is not None:
        _record_bad_targets(be.xp, t, c, int(ignore_index), check.buf)
    out = _NLL.apply(x, t, w, int(ignore_index), reduction, check is not None)
    if unbatched and reduction == "none":
        from gpucnn.functional.basic import reshape

        out = reshape(out, ())
    return _checked(out, check)


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
        with np.errstate(divide="ignore", invalid="ignore"):  # invalid: a deferred bad input
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
    check = None
    if not defers(d):
        if ((d < 0) | (d > 1)).any():
            raise ValueError(_probability_message(op, float(d[(d < 0) | (d > 1)].reshape(-1)[0])))
    elif d.size:
        check = _probability_check(op, d)
        xp = be.xp
        bad = (d < 0) | (d > 1)
        n, lo, hi = check.buf[0:1], check.buf[1:2], check.buf[2:3]
        xp.add(n, bad.sum(dtype=xp.float64), out=n)
        xp.minimum(lo, xp.where(bad, d, xp.inf).min(), out=lo)
        xp.maximum(hi, xp.where(bad, d, -xp.inf).max(), out=hi)
    w = _broadcast_param(op, "weight", be, weight, probs.shape, probs.dtype)
    return _checked(_BCE.apply(probs, t, w, reduction), check)


def _probability_message(op: str, bad: float) -> str:
    return (
        f"{op}: input values must be probabilities in [0, 1], got {bad} "
        "(use binary_cross_entropy_with_logits on raw scores)"
    )


def _probability_check(op: str, d: Any) -> _DeferredCheck:
    """Device-side check of probabilities: float64 ``[count outside [0, 1], smallest, largest
    of them]``, reset to ``[0, inf, -inf]``."""

    def describe(h: np.ndarray) -> str | None:
        n = int(h[0])
        if n == 0:
            return None
        bad = float(h[1]) if h[1] < 0 else float(h[2])
        return (f"{_probability_message(op, bad)}; {n} such value(s), found by the "
                "device-side check since the previous host read")

    return _deferred_check(("probabilities", op), d, (0.0, np.inf, -np.inf), np.float64,
                           describe)


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


class _Huber(Function):
    @staticmethod
    def forward(ctx: Context, x: Any, t: Any, delta: float, reduction: str) -> Any:
        xp = backend_of(x).xp
        diff = x - t
        a = xp.abs(diff)
        d = x.dtype.type(delta)
        loss = xp.where(a < d, x.dtype.type(0.5) * diff * diff, d * (a - x.dtype.type(0.5) * d))
        ctx.save_for_backward(diff)
        ctx.args = (d, reduction, diff.shape)
        return _reduce(xp, loss.astype(x.dtype, copy=False), reduction)

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple:
        (diff,) = ctx.saved
        d, reduction, shape = ctx.args
        xp = backend_of(diff).xp
        # PyTorch's rule: the difference clamped to [-delta, delta]
        gd = (_expand_grad(xp, g, shape, reduction) * xp.clip(diff, -d, d)).astype(
            diff.dtype, copy=False)
        need = ctx.needs_input_grad
        return (gd if need[0] else None), (-gd if len(need) > 1 and need[1] else None)


def huber_loss(
    input: Tensor,  # noqa: A002
    target: Any,
    reduction: str = "mean",
    delta: float = 1.0,
) -> Tensor:
    """Huber loss (PyTorch's ``F.huber_loss``), element-wise on ``d = input - target``:
    ``0.5 d^2`` where ``|d| < delta``, else ``delta (|d| - 0.5 delta)``.

    ``target`` has the input's shape (differentiable); ``delta`` > 0; reductions ``"mean"``,
    ``"sum"``, ``"none"``.
    """
    op = "huber_loss"
    _check_float(op, "input", input)
    _check_reduction(op, reduction)
    delta = check_number(op, "delta", delta, 0, min_open=True)
    be = backend_of(input.data)
    t = _same_shape_target(op, be, input, target)
    return _Huber.apply(input, t, float(delta), reduction)


class _KLDiv(Function):
    @staticmethod
    def forward(ctx: Context, x: Any, t: Any, reduction: str, log_target: bool) -> Any:
        xp = backend_of(x).xp
        with np.errstate(divide="ignore", invalid="ignore"):
            if log_target:
                et = xp.exp(t)
                loss = et * (t - x)
                logt = None
            else:
                et = None
                logt = xp.log(xp.where(t > 0, t, 1))  # 0 log 0 = 0 (PyTorch's xlogy)
                loss = xp.where(t > 0, t * logt, 0) - t * x
        loss = loss.astype(x.dtype, copy=False)
        ctx.save_for_backward(x, t, et, logt)
        n = x.shape[0] if x.ndim else 1
        ctx.args = (reduction, loss.shape, n)
        if reduction == "batchmean":
            total = xp.asarray(loss.sum(dtype=loss.dtype))
            with np.errstate(invalid="ignore", divide="ignore"):
                return xp.divide(total, loss.dtype.type(n), out=total)
        return _reduce(xp, loss, reduction)

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple:
        x, t, et, logt = ctx.saved
        reduction, shape, n = ctx.args
        xp = backend_of(x).xp
        if reduction == "batchmean":
            ge = xp.broadcast_to(g / n, shape)
        else:
            ge = _expand_grad(xp, g, shape, reduction)
        need = ctx.needs_input_grad
        dx = dt = None
        if need[0]:
            dx = (-ge * (et if et is not None else t)).astype(x.dtype, copy=False)
        if len(need) > 1 and need[1]:
            if et is not None:
                dt = ge * et * (t - x + 1)
            else:  # zero where the target is 0 (the limit of t log t)
                dt = ge * xp.where(t > 0, logt + 1 - x, 0)
            dt = dt.astype(x.dtype, copy=False)
        return dx, dt


def kl_div(
    input: Tensor,  # noqa: A002
    target: Any,
    reduction: str = "mean",
    log_target: bool = False,
) -> Tensor:
    """Kullback-Leibler divergence (PyTorch's ``F.kl_div``): ``input`` holds LOG-probabilities,
    ``target`` probabilities (``log_target=True``: log-probabilities), same shape.

    Element-wise ``target * (log(target) - input)`` (0 where ``target == 0``), or
    ``exp(target) * (target - input)`` with ``log_target``. Reductions: ``"mean"`` (over every
    element, as PyTorch), ``"batchmean"`` (sum / batch size: the mathematical KL divergence
    per sample), ``"sum"``, ``"none"``. ``target`` is differentiable (its gradient is 0 where
    it is 0).
    """
    op = "kl_div"
    _check_float(op, "input", input)
    if not isinstance(reduction, str) or reduction not in (*_REDUCTIONS, "batchmean"):
        raise ValueError(
            f"{op}: reduction must be 'mean', 'batchmean', 'sum' or 'none', got {reduction!r}"
        )
    if not isinstance(log_target, (bool, np.bool_)):
        raise TypeError(f"{op}: log_target must be a bool, got {type(log_target).__name__}")
    be = backend_of(input.data)
    t = _same_shape_target(op, be, input, target)
    return _KLDiv.apply(input, t, reduction, bool(log_target))
