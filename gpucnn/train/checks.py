"""Checks and warnings for silent training mistakes, and the per-sample weights of ``fit``.

Warnings (``warnings.warn``, a :class:`TrainingWarning`, at most once per ``fit`` each):

* NaN or Inf in the inputs or targets (host arrays, checked once up front) or in the loss
  (checked wherever ``fit`` reads the running loss anyway: no extra host sync);
* ``uint8`` images with values above 1 fed to a float model: they are cast, not scaled.

Errors: a model with no trainable parameters (:func:`no_trainable_message`), bad
``sample_weight`` / ``class_weight`` (:func:`check_sample_weight`, :func:`check_class_weight`).

Weights, with Keras semantics: each sample's loss is multiplied by its weight and the batch
loss is the sum divided by the number of samples (not by the sum of the weights);
``class_weight`` gives every sample the weight of its class (the label; the argmax of one-hot
targets; the rounded value of binary targets), 1.0 for classes it does not name.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from gpucnn.backend.device import array_module as _array_module
from gpucnn.tensor import Tensor

__all__ = [
    "TrainingWarning",
    "LossWatch",
    "check_class_weight",
    "check_sample_weight",
    "class_weight_table",
    "class_weights_for",
    "no_trainable_message",
    "warn_suspicious_inputs",
]


class TrainingWarning(UserWarning):
    """A likely mistake in what was passed to ``fit`` / ``evaluate`` (training still runs)."""


def no_trainable_message(model: Any, where: str = "fit") -> str:
    """The error for a model with nothing to train (instead of an autograd message)."""
    n = model.count_params() if hasattr(model, "count_params") else 0
    why = ("all its weights are frozen (trainable=False / requires_grad=False)" if n
           else "it has no weights")
    return (f"{where}: the model {model.name!r} has no trainable parameters ({why}); there "
            "is nothing to train. Unfreeze a layer (layer.trainable = True) or add layers "
            "with weights")


def _host(a: Any) -> np.ndarray | None:
    """``a`` as a host array when it is one (a NumPy array or a NumPy-backed Tensor)."""
    if isinstance(a, Tensor):
        a = a.data
    return a if isinstance(a, np.ndarray) else None


def warn_suspicious_inputs(x: Any, y: Any, where: str, model_dtype: Any,
                           stacklevel: int = 3) -> None:
    """Warn about NaN/Inf in host ``x``/``y`` and about unscaled ``uint8`` images in ``x``.

    Only host arrays are looked at (device arrays would cost a sync)."""
    xh, yh = _host(x), _host(y)
    for name, a in (("x", xh), ("y", yh)):
        if a is None or a.dtype.kind not in "fc" or a.size == 0:
            continue
        bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        if bad:
            warnings.warn(
                f"{where}: {name} contains {bad} NaN or Inf value(s); the loss and the weights "
                "will become NaN. Clean the data first (e.g. np.nan_to_num, or drop those "
                "samples)",
                TrainingWarning, stacklevel=stacklevel,
            )
    if xh is not None and xh.dtype == np.uint8 and xh.size and xh.ndim >= 2 \
            and np.dtype(model_dtype).kind == "f":
        hi = int(xh.max())
        if hi > 1:
            warnings.warn(
                f"{where}: x is uint8 with values up to {hi}: images in 0-255 are cast to "
                f"{np.dtype(model_dtype)}, not scaled, which makes training slow or unstable; "
                "pass x / 255.0 (values in [0, 1])",
                TrainingWarning, stacklevel=stacklevel,
            )


class LossWatch:
    """Warns once (per ``fit``) when a loss value read from the device is NaN or Inf."""

    def __init__(self, where: str = "fit") -> None:
        self.where = where
        self.warned = False

    def check(self, logs: Any, stacklevel: int = 3) -> None:
        """Look at ``logs["loss"]`` (already on the host) and warn the first time it is not
        finite."""
        if self.warned or not logs:
            return
        v = logs.get("loss") if hasattr(logs, "get") else None
        if isinstance(v, float) and not math.isfinite(v):
            self.warned = True
            warnings.warn(
                f"{self.where}: the loss is {v} (NaN or Inf): training diverged or the data "
                "holds NaN/Inf. Lower the learning rate, check the inputs and labels, or stop "
                "such runs with callbacks.TerminateOnNaN()",
                TrainingWarning, stacklevel=stacklevel,
            )


def check_sample_weight(where: str, w: Any, n: int) -> np.ndarray | Any:
    """``sample_weight`` as a 1-D float array of ``n`` weights (host arrays checked: finite,
    >= 0). Accepts shape ``(n,)`` or ``(n, 1)``, lists, Tensors and device arrays."""
    if isinstance(w, Tensor):
        w = w.data
    if not hasattr(w, "shape"):
        try:
            w = np.asarray(w)
        except ValueError:
            raise ValueError(f"{where}: sample_weight is ragged") from None
    if w.dtype.kind not in "biuf" or w.dtype.kind == "b":
        raise TypeError(f"{where}: sample_weight must hold numbers, got dtype {w.dtype}")
    shape = tuple(int(s) for s in w.shape)
    if shape == (n, 1):
        w = w.reshape(n)
    elif shape != (n,):
        raise ValueError(
            f"{where}: sample_weight must have shape ({n},), one weight per sample, got "
            f"{shape}"
        )
    if isinstance(w, np.ndarray):
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"{where}: sample_weight must be finite and >= 0")
    return w


def check_class_weight(where: str, class_weight: Any) -> dict[int, float]:
    """``class_weight`` as ``{class id: weight}`` (ints >= 0 to finite numbers >= 0)."""
    if not isinstance(class_weight, dict):
        raise TypeError(
            f"{where}: class_weight must be a dict {{class id: weight}}, got "
            f"{type(class_weight).__name__}"
        )
    if not class_weight:
        raise ValueError(f"{where}: class_weight is empty")
    out: dict[int, float] = {}
    for k, v in class_weight.items():
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(
                f"{where}: class_weight keys must be class ids (ints >= 0), got {k!r}"
            )
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.number)) \
                or not math.isfinite(float(v)) or float(v) < 0:
            raise ValueError(
                f"{where}: class_weight[{int(k)}] must be a finite number >= 0, got {v!r}"
            )
        out[int(k)] = float(v)
    return out


def class_weight_table(class_weight: dict[int, float]) -> np.ndarray:
    """The weights of classes ``0 .. max id`` (1.0 where not named), float64."""
    table = np.ones(max(class_weight) + 1, dtype=np.float64)
    for k, v in class_weight.items():
        table[k] = v
    return table


def class_weights_for(table: Any, y: Any, loss_kind: str) -> Any:
    """Per-sample weights of target batch ``y`` (an array on its backend) from ``table`` (on
    the same backend: ``fit`` uploads it once):
    the class is ``y`` (sparse ids), ``argmax(y, axis=1)`` (one-hot / probabilities) or
    ``round(y)`` (one binary output per sample); classes past the table weigh 1.0."""
    xp = _array_module(y)
    n = int(y.shape[0])
    if loss_kind == "sparse_categorical_crossentropy" or y.dtype.kind in "iu":
        cls = y.reshape(n, -1)[:, 0] if y.ndim > 1 else y
    elif y.ndim >= 2 and int(np.prod(y.shape[1:])) > 1:
        cls = y.reshape(n, -1).argmax(axis=1)
    else:
        cls = xp.rint(y.reshape(n))
    cls = cls.astype(np.int64)
    t = xp.asarray(table)
    size = int(t.shape[0])
    inside = (cls >= 0) & (cls < size)
    return xp.where(inside, t[xp.clip(cls, 0, size - 1)], 1.0)
