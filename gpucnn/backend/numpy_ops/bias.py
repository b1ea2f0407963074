"""Per-channel bias of NCHW tensors on NumPy: twins of the kernels in ``cuda/bias.cu``."""

from __future__ import annotations

import numpy as np

__all__ = ["bias_add_nchw", "bias_grad_nchw"]


def bias_add_nchw(y: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``y[n, c, h, w] += b[c]`` IN PLACE on ``y`` (N, C, H, W); returns ``y``.

    Twin of ``bias_add_nchw_f32/_f64``. ``b`` has shape ``(C,)`` and ``y``'s dtype.
    """
    y += b.astype(y.dtype, copy=False).reshape(1, -1, 1, 1)
    return y


def bias_grad_nchw(dy: np.ndarray) -> np.ndarray:
    """``db[c] = sum over n, h, w of dy[n, c, h, w]`` for ``dy`` (N, C, H, W); returns (C,).

    Twin of ``bias_grad_nchw_f32/_f64``; the result has ``dy``'s dtype.
    """
    n, c = dy.shape[0], dy.shape[1]
    if dy.flags.c_contiguous:
        # (N, C, HW) summed over HW then N: two contiguous reductions, no temporaries of size dy.
        hw = int(np.prod(dy.shape[2:], dtype=np.int64))  # not -1: an empty batch has no size
        return dy.reshape(n, c, hw).sum(axis=2).sum(axis=0)
    return dy.sum(axis=(0, 2, 3))
