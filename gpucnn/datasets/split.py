"""Train/test and train/dev/test splits, optionally stratified (class proportions preserved)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["train_dev_test_split", "train_test_split"]


def _rng(seed: int | None) -> np.random.Generator:
    if seed is not None:
        return np.random.default_rng(seed)
    from gpucnn import random as _random

    return _random.generator("numpy")


def _count(size: float | int, n: int, what: str) -> int:
    if isinstance(size, (bool, np.bool_)):
        raise TypeError(f"{what} must be a fraction in (0, 1) or a count, got {size!r}")
    if isinstance(size, (int, np.integer)):
        k = int(size)
    elif isinstance(size, (float, np.floating)) and 0.0 < float(size) < 1.0:
        k = math.ceil(float(size) * n)
    else:
        raise ValueError(f"{what} must be a fraction in (0, 1) or a count, got {size!r}")
    if not 0 < k < n:
        raise ValueError(f"{what}={size!r} gives {k} of {n} samples; need 0 < count < {n}")
    return k


def _stratified_take(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``k`` samples whose class counts are proportional to ``labels``'s
    (largest-remainder rounding), drawn at random within each class."""
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    exact = counts * (k / labels.shape[0])
    take = np.floor(exact).astype(np.int64)
    rest = k - int(take.sum())
    if rest > 0:
        order = np.argsort(-(exact - take), kind="stable")
        take[order[:rest]] += 1
    picked = []
    for ci in range(classes.shape[0]):
        idx = np.flatnonzero(inverse == ci)
        picked.append(rng.permutation(idx)[: take[ci]])
    return rng.permutation(np.concatenate(picked))


def _split_indices(y: Any, n: int, k: int, stratify: bool, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    if stratify:
        if y is None:
            raise ValueError("stratify=True needs labels y")
        labels = np.asarray(y)
        if labels.ndim == 2:  # one-hot
            labels = labels.argmax(axis=1)
        sel = _stratified_take(labels, k, rng)
    else:
        sel = rng.permutation(n)[:k]
    mask = np.zeros(n, dtype=bool)
    mask[sel] = True
    rest = np.flatnonzero(~mask)
    return rng.permutation(rest), sel


def _check(x: Any, y: Any) -> int:
    n = len(x)
    if y is not None and len(y) != n:
        raise ValueError(f"x has {n} samples but y has {len(y)}")
    return n


def _take(a: Any, idx: np.ndarray) -> Any:
    return None if a is None else a[idx]


def train_test_split(
    x: Any, y: Any = None, test_size: float | int = 0.2, seed: int | None = None,
    stratify: bool = False,
) -> tuple:
    """Shuffle and split ``(x, y)`` along axis 0 into a training and a test part.

    Args:
        x, y: arrays with the same first dimension (``y`` may be None).
        test_size: fraction in (0, 1) (rounded up) or a sample count.
        seed: seeds the shuffle; default: :func:`gpucnn.random.generator` ("numpy").
        stratify: keep each class's share of ``y`` in both parts.

    Returns:
        ``(x_train, x_test, y_train, y_test)`` (scikit-learn order).
    """
    n = _check(x, y)
    k = _count(test_size, n, "test_size")
    train_idx, test_idx = _split_indices(y, n, k, stratify, _rng(seed))
    return x[train_idx], x[test_idx], _take(y, train_idx), _take(y, test_idx)


def train_dev_test_split(
    x: Any, y: Any = None, dev_size: float | int = 0.1, test_size: float | int = 0.1,
    seed: int | None = None, stratify: bool = False,
) -> tuple:
    """Split into training, development (validation) and test parts.

    ``dev_size`` and ``test_size`` are fractions of the whole data set or counts.

    Returns:
        ``(x_train, x_dev, x_test, y_train, y_dev, y_test)``.
    """
    n = _check(x, y)
    k_test = _count(test_size, n, "test_size")
    k_dev = _count(dev_size, n, "dev_size")
    if k_test + k_dev >= n:
        raise ValueError(
            f"dev_size={dev_size!r} and test_size={test_size!r} leave no training samples "
            f"({k_dev} + {k_test} >= {n})"
        )
    rng = _rng(seed)
    rest, test_idx = _split_indices(y, n, k_test, stratify, rng)
    y_rest = None if y is None else np.asarray(y)[rest]
    train_local, dev_local = _split_indices(y_rest, rest.shape[0], k_dev, stratify, rng)
    train_idx, dev_idx = rest[train_local], rest[dev_local]
    return (x[train_idx], x[dev_idx], x[test_idx],
            _take(y, train_idx), _take(y, dev_idx), _take(y, test_idx))
