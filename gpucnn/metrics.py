"""Training metrics for ``compile(metrics=[...])``: running means over batches.

A metric function takes raw arrays ``(y_true, y_pred)`` of one batch (on the model's
backend; ``y_pred`` is the model OUTPUT, logits unless the model ends in a softmax/sigmoid)
and returns a per-sample array; :class:`MeanMetric` averages it over every sample seen.

Names: ``"accuracy"``/``"acc"`` (chosen from the loss: sparse categorical, categorical or
binary), ``"sparse_categorical_accuracy"``, ``"categorical_accuracy"``,
``"binary_accuracy"``, ``"top5"``/``"sparse_top_k_categorical_accuracy"`` (k=5),
``"top_k_categorical_accuracy"`` (one-hot targets, k=5), ``"precision"``, ``"recall"``,
``"mae"``, ``"mse"``; metric objects (:class:`TopKCategoricalAccuracy`,
:class:`SparseTopKCategoricalAccuracy`, :class:`Precision`, :class:`Recall`, or any
:class:`MeanMetric`); or any callable ``f(y_true, y_pred) -> per-sample values``.

Top-k accuracy follows Keras (TensorFlow's ``in_top_k``): a sample counts when fewer than
``k`` outputs are strictly larger than the true class's, so ties never count against it.
:class:`Precision` and :class:`Recall` are Keras's binary ones: every output element is a
prediction, positive where the probability is above ``thresholds`` (0.5; on a logits model the
equivalent logit), a target is positive where non-zero; they keep the global counts of true
positives and of predicted (actual) positives over every batch, so the result is
``tp / (tp + fp)`` (``tp / (tp + fn)``) of the whole pass, not a mean of batch values (0 when
the denominator is 0).

Running sums stay on the device: :meth:`MeanMetric.update` adds the batch's sum to a float64
0-d array on the batch's backend (no host read), and the built-in metrics compute that sum
with buffers reused from batch to batch (``out=`` ufuncs) instead of fresh per-sample arrays.
The sample count is a host integer (batch shapes are known on the host). Read the mean with
:meth:`MeanMetric.result` (one host read), or read :meth:`MeanMetric.pending` of several
metrics together (what ``fit`` does, at its refresh points and at the end of an epoch). The
numbers are exactly those of summing the per-sample values batch by batch into a Python float.
"""

from __future__ import annotations

import copy
import math
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
    "top_k_categorical_accuracy",
    "mean_absolute_error",
    "mean_squared_error",
    "TopKCategoricalAccuracy",
    "SparseTopKCategoricalAccuracy",
    "Precision",
    "Recall",
    "config_name",
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


def _in_top_k(op: str, cls: Any, y_pred: Any, k: Any) -> Any:
    """1.0 where fewer than ``k`` outputs of the row exceed the output of class ``cls``."""
    xp = _xp(y_pred)
    k = check_int(op, "k", k, 1)
    if y_pred.ndim != 2:
        raise ValueError(f"{op}: expects outputs (N, classes), got shape {tuple(y_pred.shape)}")
    n, c = int(y_pred.shape[0]), int(y_pred.shape[1])
    cls = cls.reshape(-1).astype(np.int64)
    if int(cls.shape[0]) != n:
        raise ValueError(f"{op}: got {n} outputs but {int(cls.shape[0])} targets")
    true = xp.take_along_axis(y_pred, xp.clip(cls, 0, max(c - 1, 0)).reshape(n, 1), axis=1)
    above = (y_pred > true).sum(axis=1)
    valid = (cls >= 0) & (cls < c)
    return ((above < k) & valid) * 1.0


def sparse_top_k_categorical_accuracy(y_true: Any, y_pred: Any, k: int = 5) -> Any:
    """1.0 where the true class id is among the ``k`` largest outputs (ties count for it)."""
    return _in_top_k("sparse_top_k_categorical_accuracy", y_true, y_pred, k)


def top_k_categorical_accuracy(y_true: Any, y_pred: Any, k: int = 5) -> Any:
    """1.0 where ``argmax(y_true)`` (one-hot targets) is among the ``k`` largest outputs."""
    op = "top_k_categorical_accuracy"
    if tuple(y_true.shape) != tuple(y_pred.shape):
        raise ValueError(
            f"{op}: expects one-hot targets of the output's shape {tuple(y_pred.shape)}, got "
            f"{tuple(y_true.shape)}; use sparse_top_k_categorical_accuracy for class ids"
        )
    return _in_top_k(op, y_true.argmax(axis=1), y_pred, k)


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

    def fresh(self, loss_name: str | None = None, from_logits: bool = True) -> MeanMetric:
        """A copy with empty running state (what ``compile``/``fit`` use of an object given
        in ``metrics=``), for a model compiled with ``loss_name`` / ``from_logits``."""
        m = copy.copy(self)
        m._buffers = _Buffers()
        m._sum = None
        m.reset()
        return m


class TopKCategoricalAccuracy(MeanMetric):
    """Keras's top-k accuracy for one-hot targets: the share of samples whose true class
    (``argmax(y_true)``) is among the ``k`` largest outputs."""

    def __init__(self, k: int = 5, name: str = "top_k_categorical_accuracy") -> None:
        self.k = check_int("TopKCategoricalAccuracy", "k", k, 1)
        super().__init__(name, lambda t, p: top_k_categorical_accuracy(t, p, self.k))


class SparseTopKCategoricalAccuracy(MeanMetric):
    """Keras's top-k accuracy for integer class ids ``(N,)``."""

    def __init__(self, k: int = 5, name: str = "sparse_top_k_categorical_accuracy") -> None:
        self.k = check_int("SparseTopKCategoricalAccuracy", "k", k, 1)
        super().__init__(name, lambda t, p: sparse_top_k_categorical_accuracy(t, p, self.k))


class _ConfusionRatio:
    """``tp / denominator`` from global counts, summed on the device in two float64 0-d
    arrays (true positives, denominator); :meth:`pending` gives both for the packed host read
    and :meth:`result` turns the read pair into the ratio (0 when the denominator is 0, as
    Keras)."""

    _op = ""
    _denominator = ""  # "predicted" (precision) or "actual" (recall)

    def __init__(self, thresholds: float | None = None, name: str | None = None,
                 from_logits: bool | None = None) -> None:
        op = type(self).__name__
        if thresholds is None:
            thresholds = 0.5
        if isinstance(thresholds, (list, tuple)):
            raise ValueError(f"{op}: thresholds must be one number in (0, 1), got a list "
                             f"{list(thresholds)!r} (one metric per threshold instead)")
        self.thresholds = check_number(op, "thresholds", thresholds, 0.0, 1.0, min_open=True,
                                       max_open=True)
        if from_logits is not None and not isinstance(from_logits, bool):
            raise TypeError(f"{op}: from_logits must be a bool or None, got {from_logits!r}")
        self.from_logits = from_logits
        self.name = name or op.lower()
        self._tp: Any = None
        self._den: Any = None
        self.count = 0

    def _cut(self) -> float:
        """The threshold on the model output: the probability, or its logit."""
        t = float(self.thresholds)
        return math.log(t / (1.0 - t)) if self.from_logits else t

    def reset(self) -> None:
        if self._tp is not None:
            self._tp.fill(0)
            self._den.fill(0)
        self.count = 0

    def update(self, y_true: Any, y_pred: Any) -> None:
        """Add the batch's counts (no host read)."""
        op = type(self).__name__
        n = int(y_pred.shape[0])
        if int(y_true.size) != int(y_pred.size):
            raise ValueError(
                f"{op}: targets of shape {tuple(y_true.shape)} do not match the outputs "
                f"{tuple(y_pred.shape)} (binary metrics: one target per output element)"
            )
        xp = _array_module(y_pred)
        acc = self._tp
        if acc is None or _is_device_array(acc) != _is_device_array(y_pred) or (
            _device_key(acc) != _device_key(y_pred)
        ):
            self._tp = xp.zeros((), dtype=np.float64)
            self._den = xp.zeros((), dtype=np.float64)
        pred = y_pred.reshape(-1) > self._cut()
        true = y_true.reshape(-1) != 0
        tp = (pred & true).sum(dtype=np.float64)
        den = (pred if self._denominator == "predicted" else true).sum(dtype=np.float64)
        xp.add(self._tp, tp, out=self._tp)
        xp.add(self._den, den, out=self._den)
        self.count += n

    def pending(self) -> tuple[Any, Any]:
        """``(tp, denominator)`` as they are (possibly on the device; 0.0 before any batch)."""
        return (0.0, 0.0) if self._tp is None else (self._tp, self._den)

    def result(self, total: Any = None) -> float:
        """The ratio of the counts (``total``: :meth:`pending` already read to the host)."""
        if total is None:
            total = tuple(_backend.to_numpy(v) if hasattr(v, "shape") else v
                          for v in self.pending())
        tp, den = (float(v) for v in total)
        return tp / den if den > 0 else 0.0

    def fresh(self, loss_name: str | None = None, from_logits: bool = True) -> _ConfusionRatio:
        """A copy with zero counts; its threshold applies to probabilities, or to logits for
        a logits model (unless ``from_logits`` was given)."""
        m = copy.copy(self)
        m._tp = m._den = None
        m.count = 0
        if self.from_logits is None:
            m.from_logits = bool(from_logits)
        return m


class Precision(_ConfusionRatio):
    """Keras's binary precision ``tp / (tp + fp)`` over every output element, from global
    counts (see the module doc). ``thresholds``: one probability (default 0.5)."""

    _denominator = "predicted"


class Recall(_ConfusionRatio):
    """Keras's binary recall ``tp / (tp + fn)`` over every output element, from global counts
    (see the module doc). ``thresholds``: one probability (default 0.5)."""

    _denominator = "actual"


def config_name(metric: Any) -> str | None:
    """The name to record for a metric object in a saved model's compile settings."""
    return getattr(metric, "name", None) if not isinstance(metric, str) else metric


_NAMES: dict[str, Callable[..., Any]] = {
    "sparse_categorical_accuracy": sparse_categorical_accuracy,
    "categorical_accuracy": categorical_accuracy,
    "binary_accuracy": binary_accuracy,
    "sparse_top_k_categorical_accuracy": sparse_top_k_categorical_accuracy,
    "top5": sparse_top_k_categorical_accuracy,
    "top_k_categorical_accuracy": top_k_categorical_accuracy,
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


def get(metric: Any, loss_name: str | None = None, from_logits: bool = True) -> Any:
    """A fresh metric for ``metric`` (a name, a metric object, or a callable).

    ``"accuracy"``/``"acc"`` picks the accuracy that fits ``loss_name``; binary accuracy
    thresholds at 0 for logits and 0.5 for probabilities (``from_logits=False``).

    Raises:
        ValueError: unknown metric name (the message lists the known ones).
    """
    if isinstance(metric, (MeanMetric, _ConfusionRatio)):
        return metric.fresh(loss_name, from_logits)
    if isinstance(metric, type) and issubclass(metric, (MeanMetric, _ConfusionRatio)):
        raise TypeError(f"metrics: got the class {metric.__name__}; pass an instance "
                        f"({metric.__name__}())")
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
    if key == "precision":
        return Precision(name=metric).fresh(loss_name, from_logits)
    if key == "recall":
        return Recall(name=metric).fresh(loss_name, from_logits)
    fn = _NAMES.get(key)
    if fn is None:
        raise ValueError(
            f"compile(metrics=...): unknown metric {metric!r}; known: accuracy, acc, "
            f"{', '.join(sorted([*_NAMES, 'precision', 'recall']))}, a metric object or a "
            "callable(y_true, y_pred)"
        )
    return MeanMetric(metric, fn, _BATCH_SUMS.get(fn))
