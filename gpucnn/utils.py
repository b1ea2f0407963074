"""Keras-style utilities: :func:`to_categorical` (integer labels to one-hot rows)."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucnn._checks import check_int

__all__ = ["to_categorical"]


def to_categorical(y: Any, num_classes: int | None = None, dtype: Any = "float32") -> np.ndarray:
    """One-hot encode integer class ids, as ``keras.utils.to_categorical``.

    Args:
        y: class ids (array-like of integers, or floats holding whole numbers), any shape;
            a trailing axis of size 1 is dropped first (``(N, 1)`` labels give ``(N, C)``).
        num_classes: the number of classes ``C`` (default ``max(y) + 1``).
        dtype: the result's dtype.

    Returns:
        A NumPy array of shape ``y.shape + (C,)`` with 1 at each label's index, else 0.

    Raises:
        TypeError: ``y`` does not hold numbers (e.g. strings).
        ValueError: negative or non-integer labels, or a label >= ``num_classes``.
    """
    op = "to_categorical"
    if hasattr(y, "numpy") and not isinstance(y, np.ndarray):
        y = y.numpy()  # a Tensor (or a device array's host copy)
    elif hasattr(y, "get") and hasattr(y, "__cuda_array_interface__"):
        y = y.get()
    try:
        a = np.asarray(y)
    except ValueError:
        raise ValueError(f"{op}: y is ragged (nested lists of different lengths)") from None
    if a.dtype.kind not in "biuf":
        raise TypeError(
            f"{op}: labels must be integer class ids, got dtype {a.dtype}"
            + ("; encode string labels first, e.g. classes, y = np.unique(y, "
               "return_inverse=True)" if a.dtype.kind in "USO" else "")
        )
    try:
        out_dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{op}: dtype must be a NumPy dtype, got {dtype!r}") from None
    if a.dtype.kind == "f":
        if not np.isfinite(a).all() or (a != np.round(a)).any():
            raise ValueError(f"{op}: labels must be integer class ids, got non-integer values "
                             f"(dtype {a.dtype})")
    labels = a.astype(np.int64)
    if labels.size and int(labels.min()) < 0:
        raise ValueError(f"{op}: labels must be >= 0, got {int(labels.min())}")
    if labels.ndim > 1 and labels.shape[-1] == 1:
        labels = labels.reshape(labels.shape[:-1])
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    else:
        num_classes = check_int(op, "num_classes", num_classes, 1)
        if labels.size and int(labels.max()) >= num_classes:
            raise ValueError(
                f"{op}: labels must be < num_classes={num_classes}, got {int(labels.max())}"
            )
    flat = labels.reshape(-1)
    out = np.zeros((flat.size, num_classes), dtype=out_dtype)
    out[np.arange(flat.size), flat] = 1
    return out.reshape((*labels.shape, num_classes))
