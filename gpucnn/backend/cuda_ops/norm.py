"""Batch normalisation on the GPU: launchers for ``cuda/norm.cu``.

Same names and signatures as :mod:`gpucnn.backend.numpy_ops.norm`. CuPy is reached only
through :func:`~gpucnn.backend.runtime.current_runtime` (the host emulator swaps in NumPy).
``x`` is ``(N, C)`` or ``(N, C, *spatial)``, viewed by the kernels as C-contiguous (N, C, S).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucnn.backend.runtime import MAX_GRID, current_runtime, dtype_suffix

__all__ = ["batchnorm_stats", "batchnorm_forward", "batchnorm_backward"]

_FAMILY = "norm"


def _ncs(op: str, x: Any) -> tuple[int, int, int]:
    if x.ndim < 2:
        raise ValueError(f"{op}: expected an (N, C, ...) array, got shape {tuple(x.shape)}")
    n, c = int(x.shape[0]), int(x.shape[1])
    s = 1
    for d in x.shape[2:]:
        s *= int(d)
    return n, c, s


def _channel_grid(rt: Any, op: str, c: int) -> tuple[int, int]:
    """(grid, block) of a one-block-per-channel reduction launch."""
    block = int(rt.block)
    if block > 1024:
        raise ValueError(f"{op}: block size must be <= 1024, got {block}")
    cap = MAX_GRID if rt.grid_cap is None else int(rt.grid_cap)
    return max(1, min(c, cap)), block


def _vec(xp: Any, v: Any, c: int, dtype: Any, fill: float) -> Any:
    if v is None:
        return xp.full((c,), fill, dtype=dtype)
    return xp.ascontiguousarray(v, dtype=dtype)


def batchnorm_stats(x: Any) -> tuple[Any, Any]:
    """Per-channel mean and biased variance of ``x`` (N, C, ...): two (C,) arrays of x.dtype.

    Kernel ``bn_stats_f32/_f64``: one block per channel, two passes, float64 accumulation,
    shared-memory tree reduction (deterministic).
    """
    n, c, s = _ncs("batchnorm_stats", x)
    rt = current_runtime()
    xp = rt.xp
    xc = xp.ascontiguousarray(x)
    mean = xp.zeros((c,), dtype=x.dtype)
    var = xp.zeros((c,), dtype=x.dtype)
    if c == 0 or n * s == 0:
        return mean, var
    grid, block = _channel_grid(rt, "batchnorm_stats", c)
    k = rt.kernel(_FAMILY, f"bn_stats_{dtype_suffix(x.dtype, 'bn_stats')}")
    k((grid,), (block,), (xc, mean, var, np.int64(n), np.int64(c), np.int64(s)))
    return mean, var


def batchnorm_forward(
    x: Any, mean: Any, var: Any, weight: Any | None, bias: Any | None, eps: float
) -> Any:
    """``y = (x - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c]``, same shape as x.

    Kernel ``bn_fwd_f32/_f64``: one thread per element, grid-stride.
    """
    n, c, s = _ncs("batchnorm_forward", x)
    rt = current_runtime()
    xp = rt.xp
    dt = x.dtype
    xc = xp.ascontiguousarray(x)
    y = xp.empty(x.shape, dtype=dt)
    total = n * c * s
    rt.launch(
        _FAMILY,
        f"bn_fwd_{dtype_suffix(dt, 'bn_fwd')}",
        total,
        (
            xc,
            _vec(xp, mean, c, dt, 0.0),
            _vec(xp, var, c, dt, 1.0),
            _vec(xp, weight, c, dt, 1.0),
            _vec(xp, bias, c, dt, 0.0),
            y,
            dt.type(eps),
            np.int64(n),
            np.int64(c),
            np.int64(s),
        ),
    )
    return y


def batchnorm_backward(
    dy: Any, x: Any, mean: Any, var: Any, weight: Any | None, eps: float, training: bool
) -> tuple[Any, Any, Any]:
    """Gradients of batch norm: ``(dx, dweight, dbias)`` (see the NumPy twin for the formula).

    Kernels ``bn_bwd_reduce_f32/_f64`` (one block per channel: sums of dy and dy*xhat) then
    ``bn_bwd_dx_f32/_f64`` (one thread per element).
    """
    n, c, s = _ncs("batchnorm_backward", x)
    rt = current_runtime()
    xp = rt.xp
    dt = x.dtype
    suf = dtype_suffix(dt, "bn_bwd")
    xc = xp.ascontiguousarray(x)
    dyc = xp.ascontiguousarray(dy, dtype=dt)
    m = _vec(xp, mean, c, dt, 0.0)
    v = _vec(xp, var, c, dt, 1.0)
    w = _vec(xp, weight, c, dt, 1.0)
    sum_dy = xp.zeros((c,), dtype=dt)
    sum_dy_xhat = xp.zeros((c,), dtype=dt)
    dx = xp.zeros(x.shape, dtype=dt)
    if c == 0 or n * s == 0:
        return dx, sum_dy_xhat, sum_dy
    sizes = (np.int64(n), np.int64(c), np.int64(s))
    grid, block = _channel_grid(rt, "batchnorm_backward", c)
    k = rt.kernel(_FAMILY, f"bn_bwd_reduce_{suf}")
    k((grid,), (block,), (dyc, xc, m, v, sum_dy, sum_dy_xhat, dt.type(eps), *sizes))
    rt.launch(
        _FAMILY,
        f"bn_bwd_dx_{suf}",
        n * c * s,
        (dyc, xc, m, v, w, sum_dy, sum_dy_xhat, dx, dt.type(eps), np.int32(bool(training)), *sizes),
    )
    return dx, sum_dy_xhat, sum_dy
