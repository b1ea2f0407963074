"""Per-channel bias of NCHW tensors on the GPU: launchers for ``cuda/bias.cu``.

Same names and signatures as :mod:`gpucnn.backend.numpy_ops.bias`. CuPy is reached only
through :func:`~gpucnn.backend.runtime.current_runtime` (the host emulator swaps in NumPy).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucnn.backend.runtime import MAX_GRID, current_runtime, dtype_suffix

__all__ = ["bias_add_nchw", "bias_grad_nchw"]

_FAMILY = "bias"


def _check_nchw(op: str, a: Any) -> None:
    if a.ndim != 4:
        raise ValueError(f"{op}: expected a 4-D (N, C, H, W) array, got shape {tuple(a.shape)}")


def bias_add_nchw(y: Any, b: Any) -> Any:
    """``y[n, c, h, w] += b[c]`` IN PLACE on ``y`` (N, C, H, W); returns ``y``.

    Kernel ``bias_add_nchw_f32/_f64``: one thread per element, grid-stride.
    """
    _check_nchw("bias_add_nchw", y)
    rt = current_runtime()
    xp = rt.xp
    n, c, h, w = (int(s) for s in y.shape)
    if tuple(b.shape) != (c,):
        raise ValueError(f"bias_add_nchw: bias must have shape ({c},), got {tuple(b.shape)}")
    bb = xp.ascontiguousarray(b, dtype=y.dtype)
    target = y if y.flags.c_contiguous else xp.ascontiguousarray(y)
    total = n * c * h * w
    rt.launch(
        _FAMILY,
        f"bias_add_nchw_{dtype_suffix(y.dtype, 'bias_add_nchw')}",
        total,
        (bb, target, np.int64(total), np.int64(c), np.int64(h * w)),
    )
    if target is not y:
        y[...] = target
    return y


def bias_grad_nchw(dy: Any) -> Any:
    """``db[c] = sum over n, h, w of dy[n, c, h, w]`` for ``dy`` (N, C, H, W); returns (C,).

    Kernel ``bias_grad_nchw_f32/_f64``: one block per channel (grid-stride over channels),
    shared-memory tree reduction, deterministic.
    """
    _check_nchw("bias_grad_nchw", dy)
    rt = current_runtime()
    xp = rt.xp
    n, c, h, w = (int(s) for s in dy.shape)
    dyc = xp.ascontiguousarray(dy)
    db = xp.zeros((c,), dtype=dy.dtype)
    if c == 0 or n * h * w == 0:
        return db
    block = int(rt.block)
    if block > 1024:
        raise ValueError(f"bias_grad_nchw: block size must be <= 1024, got {block}")
    cap = MAX_GRID if rt.grid_cap is None else int(rt.grid_cap)
    grid = max(1, min(c, cap))
    k = rt.kernel(_FAMILY, f"bias_grad_nchw_{dtype_suffix(dy.dtype, 'bias_grad_nchw')}")
    k((grid,), (block,), (dyc, db, np.int64(n), np.int64(c), np.int64(h * w)))
    return db
