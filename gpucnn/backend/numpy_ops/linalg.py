"""Dense matrix products of the NumPy backend (twin of :mod:`gpucnn.backend.cuda_ops.linalg`)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["matmul2d"]


def matmul2d(a: np.ndarray, b: np.ndarray, trans_a: bool = False, trans_b: bool = False) -> Any:
    """``op(a) @ op(b)`` of 2-D arrays (``op(x)`` is ``x.T`` when ``trans_x``): (M, K) @ (K, N)
    -> (M, N) in the operands' dtype."""
    return (a.T if trans_a else a) @ (b.T if trans_b else b)
