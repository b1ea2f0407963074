"""Batch normalisation on NumPy: twins of the ``cuda/norm.cu`` kernels.

Layout: ``x`` is ``(N, C)`` or ``(N, C, *spatial)`` (e.g. NCHW); statistics are per channel
``c`` over the ``M = N * prod(spatial)`` elements of that channel. Reductions accumulate in
float64 (as the kernels do) and results are cast back to ``x.dtype``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["batchnorm_stats", "batchnorm_forward", "batchnorm_backward"]


def _ncs(op: str, x: Any) -> tuple[int, int, int]:
    """``(N, C, S)`` of ``x`` viewed as (N, C, S) with S the product of the spatial dims."""
    if x.ndim < 2:
        raise ValueError(f"{op}: expected an (N, C, ...) array, got shape {tuple(x.shape)}")
    n, c = int(x.shape[0]), int(x.shape[1])
    s = 1
    for d in x.shape[2:]:
        s *= int(d)
    return n, c, s


def _bshape(x: Any) -> tuple[int, ...]:
    """Shape that broadcasts a (C,) vector against ``x`` (N, C, ...)."""
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def batchnorm_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and biased variance of ``x`` (N, C, ...): two (C,) arrays of x.dtype.

    Twin of kernel ``bn_stats_f32/_f64`` (two passes, float64 accumulation).
    """
    n, c, s = _ncs("batchnorm_stats", x)
    x3 = x.reshape(n, c, s).astype(np.float64, copy=False)
    mean = x3.mean(axis=(0, 2))
    var = ((x3 - mean[None, :, None]) ** 2).mean(axis=(0, 2))
    return mean.astype(x.dtype), var.astype(x.dtype)


def batchnorm_forward(
    x: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    weight: np.ndarray | None,
    bias: np.ndarray | None,
    eps: float,
) -> np.ndarray:
    """``y = (x - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c]``, same shape as x.

    ``weight``/``bias`` (C,) may be None (1 and 0). Twin of kernel ``bn_fwd_f32/_f64``.
    """
    dt = x.dtype.type
    bs = _bshape(x)
    invstd = dt(1) / np.sqrt(var.astype(x.dtype, copy=False) + dt(eps))
    y = (x - mean.astype(x.dtype, copy=False).reshape(bs)) * invstd.reshape(bs)
    if weight is not None:
        y *= weight.astype(x.dtype, copy=False).reshape(bs)
    if bias is not None:
        y += bias.astype(x.dtype, copy=False).reshape(bs)
    return y


def batchnorm_backward(
    dy: np.ndarray,
    x: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    weight: np.ndarray | None,
    eps: float,
    training: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of batch norm: ``(dx, dweight, dbias)``; dx like x, dweight/dbias (C,).

    ``mean``/``var`` are the statistics used in the forward pass (batch statistics when
    ``training``, running ones otherwise). With ``xhat = (x - mean) * invstd``:
    ``dbias = sum(dy)``, ``dweight = sum(dy * xhat)`` per channel, and
    ``dx = weight * invstd * (dy - dbias/M - xhat * dweight/M)`` in training,
    ``dx = weight * invstd * dy`` in eval. Twin of kernels ``bn_bwd_reduce`` and ``bn_bwd_dx``.
    """
    n, c, s = _ncs("batchnorm_backward", x)
    m = n * s
    g3 = dy.reshape(n, c, s).astype(np.float64, copy=False)
    x3 = x.reshape(n, c, s).astype(np.float64, copy=False)
    mu = mean.astype(np.float64)[None, :, None]
    invstd = 1.0 / np.sqrt(var.astype(np.float64) + float(eps))
    sum_dy = g3.sum(axis=(0, 2))
    sum_dy_xhat = (g3 * (x3 - mu)).sum(axis=(0, 2)) * invstd
    # the kernels round the sums to x.dtype before the dx pass: do the same
    sum_dy = sum_dy.astype(x.dtype)
    sum_dy_xhat = sum_dy_xhat.astype(x.dtype)
    w = np.ones(c) if weight is None else weight.astype(np.float64)
    scale = (w * invstd)[None, :, None]
    if training:
        xhat = (x3 - mu) * invstd[None, :, None]
        inner = g3 - sum_dy.astype(np.float64)[None, :, None] / m
        inner -= xhat * (sum_dy_xhat.astype(np.float64)[None, :, None] / m)
        dx = scale * inner
    else:
        dx = scale * g3
    return dx.astype(x.dtype).reshape(x.shape), sum_dy_xhat, sum_dy
