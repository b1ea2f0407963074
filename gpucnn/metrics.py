"""Training metrics for ``compile(metrics=[...])``: running means over batches.

A metric function takes raw arrays ``(y_true, y_pred)`` of one batch (on the model's
backend; ``y_pred`` is the model OUTPUT, logits unless the model ends in a softmax/sigmoid)
and returns a per-sample array; :class:`MeanMetric` averages it over every sample seen.

Names: ``"accuracy"``/``"acc"`` (chosen from the loss: sparse categorical, categorical or
binary), ``"sparse_categorical_accuracy"``, ``"categorical_accuracy"``,
``"binary_accuracy"``, ``"top5"``/``"sparse_top_k_categorical_accuracy"`` (k=5),
``"mae"``, ``"mse"``; or any callable ``f(y_true, y_pred) -> per-sample values``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpucnn import backend as _backend

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
    yp = y_pred.reshape(y_pred.shape[0], -1) > threshold
    yt = y_true.reshape(y_pred.shape[0], -1) > 0.5
    return (yp == yt).mean(axis=1)


def sparse_top_k_categorical_accuracy(y_true: Any, y_pred: Any, k: int = 5) -> Any:
    """1.0 where the true class is among the ``k`` largest outputs."""
    xp = _xp(y_pred)
    k = min(k, y_pred.shape[1])
    top = xp.argpartition(-y_pred, k - 1, axis=1)[:, :k]
    return (top == y_true.reshape(-1, 1)).any(axis=1) * 1.0


def mean_absolute_error(y_true: Any, y_pred: Any) -> Any:
    d = abs(y_pred.reshape(y_pred.shape[0], -1) - y_true.reshape(y_pred.shape[0], -1))
    return d.mean(axis=1)


def mean_squared_error(y_true: Any, y_pred: Any) -> Any:
    d = y_pred.reshape(y_pred.shape[0], -1) - y_true.reshape(y_pred.shape[0], -1)
    return (d * d).mean(axis=1)


class MeanMetric:
    """Sample-weighted running mean of a per-sample metric function.

    Args:
        name: the key in ``logs``/``History`` (``val_`` is prefixed for validation).
        fn: ``fn(y_true, y_pred) -> per-sample array``.
    """

    def __init__(self, name: str, fn: Callable[[Any, Any], Any]) -> None:
        self.name = name
        self.fn = fn
        self.reset()

    def reset(self) -> None:
        self.total = 0.0
        self.count = 0

    def update(self, y_true: Any, y_pred: Any) -> None:
        vals = self.fn(y_true, y_pred)
        n = int(y_pred.shape[0])
        self.total += float(vals.sum()) if hasattr(vals, "sum") else float(vals) * n
        self.count += n

    def result(self) -> float:
        return self.total / self.count if self.count else float("nan")


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
    if key in ("accuracy", "acc"):
        if loss_name in ("binary_crossentropy", "bce"):
            return MeanMetric(metric, lambda t, p: binary_accuracy(t, p, thr))
        if loss_name in ("categorical_crossentropy",):
            return MeanMetric(metric, categorical_accuracy)
        return MeanMetric(metric, sparse_categorical_accuracy)
    if key == "binary_accuracy":
        return MeanMetric(metric, lambda t, p: binary_accuracy(t, p, thr))
    fn = _NAMES.get(key)
    if fn is None:
        raise ValueError(
            f"compile(metrics=...): unknown metric {metric!r}; known: accuracy, acc, "
            f"{', '.join(sorted(_NAMES))}, or a callable(y_true, y_pred)"
        )
    return MeanMetric(metric, fn)
