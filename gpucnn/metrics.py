"""Training metrics for ``compile(metrics=[...])``: running means over batches.

A metric function takes raw arrays ``(y_true, y_pred)`` of one batch (on the model's
backend; ``y_pred`` is the model OUTPUT, logits unless the model ends in a softmax/sigmoid)
and returns a per-sample array; :class:`MeanMetric` averages it over every sample seen.

Names: ``"accuracy"``/``"acc"`` (chosen from the loss: sparse categorical, categorical or
binary), ``"sparse_categorical_accuracy"``, ``"categorical_accuracy"``,
``"binary_accuracy"``, ``"top5"``/``"sparse_top_k_categorical_accuracy"`` (k=5),
``"mae"``, ``"mse"``; or any callable ``f(y_true, y_pred) -> per-sample values``.

Running sums stay on the device: :meth:`MeanMetric.update` adds the batch's sum to a float64
0-d array on the batch's backend (no host read), and the built-in metrics compute that sum
with buffers reused from batch to batch (``out=`` ufuncs) instead of fresh per-sample arrays.
The sample count is a host integer (batch shapes are known on the host). Read the mean with
:meth:`MeanMetric.result` (one host read), or read :meth:`MeanMetric.pending` of several
metrics together (what ``fit`` does, at its refresh points and at the end of an epoch). The
numbers are exactly those of summing the per-sample values batch by batch into a Python float.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from gpucnn import backend as _backend
from gpucnn._checks import check_int, check_number
from gpucnn.backend.device import array_module as _array_module
from gpucnn.backend.device import is_device_array as _is_device_array

__all__ = [
    "MeanMetric",
    "sparse_categorical_accuracy",
    "categorical_accuracy",
    "binary_accuracy",
    "sparse_top_k_categorical_accuracy",
    "mean_absolute_error",
    "mean_squared_error",
    "get",
]


def _xp(a: Any) -> Any:
    return _backend.backend_of(a).xp


def _device_key(a: Any) -> Any:
    """Which device ``a`` lives on, as a hashable value (a device id, ``"cpu"`` or ``None``)."""
    dev = getattr(a, "device", None)
    return getattr(dev, "id", dev if isinstance(dev, (str, int)) else None)


class _Buffers:
    """Arrays reused from batch to batch, one per (role, shape, dtype, device): a fit keeps
    two sets at most (full batches and the shorter last one)."""

    _MAX = 24

    def __init__(self) -> None:
        self._bufs: dict[tuple, Any] = {}

    def get(self, role: str, like: Any, shape: tuple, dtype: Any) -> Any:
        xp = _array_module(like)
        key = (role, tuple(int(v) for v in shape), np.dtype(dtype).str, id(xp),
               _device_key(like))
        b = self._bufs.get(key)
        if b is None:
            if len(self._bufs) >= self._MAX:
                self._bufs.clear()
            b = self._bufs[key] = (xp.empty if shape else xp.zeros)(shape, dtype=dtype)
        return b


def _flat2(a: Any, n: int) -> Any | None:
    """``a`` as ``(n, -1)`` without a copy (``None`` when that would need one)."""
    if not a.flags.c_contiguous:
        return None
    return a.reshape(n, -1)


def _count(buf: Any, eq: Any) -> Any:
    """The number of True values of ``eq`` as a 0-d int64 array (reused)."""
    cnt = buf.get("count", eq, (), np.int64)
    eq.sum(dtype=np.int64, out=cnt)
    return cnt


def _sparse_acc_sum(y_true: Any, y_pred: Any, buf: _Buffers) -> Any | None:
    if y_pred.ndim != 2 or y_true.size != y_pred.shape[0]:
        return None
    if not (y_true.dtype.kind == "i" or (y_true.dtype.kind == "u" and y_true.dtype.itemsize < 8)):
        return None  # float labels: the per-sample function casts them first
    xp = _array_module(y_pred)
    n = y_pred.shape[0]
    am = buf.get("argmax", y_pred, (n,), np.int64)
    y_pred.argmax(axis=1, out=am)
    eq = buf.get("eq", y_pred, (n,), np.bool_)
    xp.equal(am, y_true.reshape(-1), out=eq)
    return _count(buf, eq)


def _categorical_acc_sum(y_true: Any, y_pred: Any, buf: _Buffers) -> Any | None:
    if y_pred.ndim != 2 or tuple(y_true.shape) != tuple(y_pred.shape):
        return None
    xp = _array_module(y_pred)
    n = y_pred.shape[0]
    a, b = buf.get("argmax", y_pred, (n,), np.int64), buf.get("argmax_t", y_pred, (n,), np.int64)
    y_pred.argmax(axis=1, out=a)
    y_true.argmax(axis=1, out=b)
    eq = buf.get("eq", y_pred, (n,), np.bool_)
    xp.equal(a, b, out=eq)
    return _count(buf, eq)


def _binary_acc_sum(y_true: Any, y_pred: Any, buf: _Buffers, threshold: float) -> Any | None:
    n = int(y_pred.shape[0])
    yp, yt = _flat2(y_pred, n), (_flat2(y_true, n) if y_true.size == y_pred.size else None)
    if yp is None or yt is None or n == 0:
        return None
    xp = _array_module(y_pred)
    a = buf.get("gt", y_pred, yp.shape, np.bool_)
    b = buf.get("gt_t", y_pred, yp.shape, np.bool_)
    xp.greater(yp, threshold, out=a)
    xp.greater(yt, 0.5, out=b)
    xp.equal(a, b, out=a)
    if yp.shape[1] == 1:  # one output per sample: the per-sample means are the 0/1 values
        return _count(buf, a)
    rows = buf.get("rows", y_pred, (n,), np.float64)
    a.mean(axis=1, out=rows)
    total = buf.get("total", y_pred, (), np.float64)
    rows.sum(out=total)
    return total


def _error_sum(y_true: Any, y_pred: Any, buf: _Buffers, squared: bool) -> Any | None:
    n = int(y_pred.shape[0])
    yp, yt = _flat2(y_pred, n), (_flat2(y_true, n) if y_true.size == y_pred.size else None)
    if yp is None or yt is None or n == 0:
        return None
    xp = _array_module(y_pred)
    dt = np.result_type(yp.dtype, yt.dtype)
    if dt not in (np.float32, np.float64):  # float16's mean has its own intermediate rules
        return None
    d = buf.get("diff", y_pred, yp.shape, dt)
    xp.subtract(yp, yt, out=d)
    if squared:
        xp.multiply(d, d, out=d)
    else:
        xp.abs(d, out=d)
    rows = buf.get("rows", y_pred, (n,), dt)
    d.mean(axis=1, out=rows)
    total = buf.get("total", y_pred, (), dt)
    rows.sum(out=total)
    return total


def sparse_categorical_accuracy(y_true: Any, y_pred: Any) -> Any:
    """1.0 where ``argmax(y_pred, axis=1) == y_true`` (integer class ids), else 0.0."""
    return (y_pred.argmax(axis=1) == y_true.reshape(-1).astype(y_pred.argmax(axis=1).dtype)) * 1.0


def categorical_accuracy(y_true: Any, y_pred: Any) -> Any:
    """1.0 where ``argmax(y_pred) == argmax(y_true)`` (one-hot / probability targets)."""
    return (y_pred.argmax(axis=1) == y_true.argmax(axis=1)) * 1.0


def binary_accuracy(y_true: Any, y_pred: Any, threshold: float = 0.0) -> Any:
    """1.0 where ``(y_pred > threshold) == (y_true > 0.5)``, averaged over trailing dims.

    ``threshold`` is 0 for logits (the default) and 0.5 for probabilities.
    """
    threshold = check_number("binary_accuracy", "threshold", threshold, finite=False)
    yp = y_pred.reshape(y_pred.shape[0], -1) > threshold
    yt = y_true.reshape(y_pred.shape[0], -1) > 0.5
    return (yp == yt).mean(axis=1)


def sparse_top_k_categorical_accuracy(y_true: Any, y_pred: Any, k: int = 5) -> Any:
    """1.0 where the true class is among the ``k`` largest outputs."""
    xp = _xp(y_pred)
    k = min(check_int("sparse_top_k_categorical_accuracy", "k", k, 1), y_pred.shape[1])
    top = xp.argpartition(-y_pred, k - 1, axis=1)[:, :k]
    return (top == y_true.reshape(-1, 1)).any(axis=1) * 1.0


def mean_absolute_error(y_true: Any, y_pred: Any) -> Any:
    d = abs(y_pred.reshape(y_pred.shape[0], -1) - y_true.reshape(y_pred.shape[0], -1))
    return d.mean(axis=1)


def mean_squared_error(y_true: Any, y_pred: Any) -> Any:
    d = y_pred.reshape(y_pred.shape[0], -1) - y_true.reshape(y_pred.shape[0], -1)
    return (d * d).mean(axis=1)


BatchSum = Callable[[Any, Any, _Buffers], Any]


class MeanMetric:
    """Sample-weighted running mean of a per-sample metric function, summed on the device.

    Args:
        name: the key in ``logs``/``History`` (``val_`` is prefixed for validation).
        fn: ``fn(y_true, y_pred) -> per-sample array``.
        batch_sum: optional ``batch_sum(y_true, y_pred, buffers) -> 0-d array`` giving
            ``fn(...).sum()`` exactly, with reused buffers; it may return ``None`` for inputs
            it does not handle (then ``fn`` is used).

    ``count`` is the number of samples seen (a host int); the running sum is a float64 0-d
    array on the backend of the batches (:meth:`pending`), read by :meth:`result` or
    :attr:`total`.
    """

    def __init__(self, name: str, fn: Callable[[Any, Any], Any],
                 batch_sum: BatchSum | None = None) -> None:
        self.name = name
        self.fn = fn
        self._batch_sum = batch_sum
        self._buffers = _Buffers()
        self._sum: Any = None
        self.reset()

    def reset(self) -> None:
        if self._sum is not None:
            self._sum.fill(0)  # in place: no allocation (a tiny kernel on the device)
        self.count = 0

    def _accumulator(self, like: Any) -> Any:
        acc = self._sum
        if acc is None or _is_device_array(acc) != _is_device_array(like) or (
            _device_key(acc) != _device_key(like)
        ):
            acc = self._sum = _array_module(like).zeros((), dtype=np.float64)
        return acc

    def update(self, y_true: Any, y_pred: Any) -> None:
        """Add the batch's per-sample values to the running sum (no host read)."""
        n = int(y_pred.shape[0])
        s = None
        if self._batch_sum is not None:
            s = self._batch_sum(y_true, y_pred, self._buffers)
        if s is None:
            vals = self.fn(y_true, y_pred)
            s = vals.sum() if hasattr(vals, "sum") else float(vals) * n
        acc = self._accumulator(y_pred)
        if _is_device_array(acc) and not _is_device_array(s):
            s = float(s)  # a host value (custom metrics): no device read
        _array_module(acc).add(acc, s, out=acc)
        self.count += n

    def pending(self) -> Any:
        """The running sum as it is (a 0-d array, possibly on the device; ``0.0`` before any
        batch), for reading several metrics in one host transfer."""
        return 0.0 if self._sum is None else self._sum

    def result(self, total: float | None = None) -> float:
        """The mean so far (``nan`` before any sample). ``total``: the running sum already
        read to the host (from :meth:`pending`); without it, this reads it (a host sync)."""
        if not self.count:
            return float("nan")
        if total is None:
            total = self.total
        return float(total) / self.count

    @property
    def total(self) -> float:
        """The running sum, read to the host."""
        return float(_backend.to_numpy(self.pending()))


_NAMES: dict[str, Callable[..., Any]] = {
    "sparse_categorical_accuracy": sparse_categorical_accuracy,
    "categorical_accuracy": categorical_accuracy,
    "binary_accuracy": binary_accuracy,
    "sparse_top_k_categorical_accuracy": sparse_top_k_categorical_accuracy,
    "top5": sparse_top_k_categorical_accuracy,
    "mae": mean_absolute_error,
    "mean_absolute_error": mean_absolute_error,
    "mse": mean_squared_error,
    "mean_squared_error": mean_squared_error,
}


_BATCH_SUMS: dict[Callable[..., Any], BatchSum] = {
    sparse_categorical_accuracy: _sparse_acc_sum,
    categorical_accuracy: _categorical_acc_sum,
    mean_absolute_error: lambda t, p, b: _error_sum(t, p, b, False),
    mean_squared_error: lambda t, p, b: _error_sum(t, p, b, True),
}


def get(metric: str | Callable[..., Any], loss_name: str | None = None,
        from_logits: bool = True) -> MeanMetric:
    """A :class:`MeanMetric` for ``metric`` (a name, or a callable).

    ``"accuracy"``/``"acc"`` picks the accuracy that fits ``loss_name``; binary accuracy
    thresholds at 0 for logits and 0.5 for probabilities (``from_logits=False``).

    Raises:
        ValueError: unknown metric name (the message lists the known ones).
    """
    if callable(metric):
        return MeanMetric(getattr(metric, "__name__", "metric"), metric)
    if not isinstance(metric, str):
        raise ValueError(f"metrics: expected names or callables, got {metric!r}")
    key = metric.lower()
    thr = 0.0 if from_logits else 0.5

    def binary() -> MeanMetric:
        return MeanMetric(metric, lambda t, p: binary_accuracy(t, p, thr),
                          lambda t, p, b: _binary_acc_sum(t, p, b, thr))

    if key in ("accuracy", "acc"):
        if loss_name in ("binary_crossentropy", "bce"):
            return binary()
        if loss_name in ("categorical_crossentropy",):
            return MeanMetric(metric, categorical_accuracy, _categorical_acc_sum)
        return MeanMetric(metric, sparse_categorical_accuracy, _sparse_acc_sum)
    if key == "binary_accuracy":
        return binary()
    fn = _NAMES.get(key)
    if fn is None:
        raise ValueError(
            f"compile(metrics=...): unknown metric {metric!r}; known: accuracy, acc, "
            f"{', '.join(sorted(_NAMES))}, or a callable(y_true, y_pred)"
        )
    return MeanMetric(metric, fn, _BATCH_SUMS.get(fn))
