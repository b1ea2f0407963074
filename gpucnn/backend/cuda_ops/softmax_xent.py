"""Softmax, log-softmax and fused cross-entropy on the GPU: launchers for
``cuda/softmax_xent.cu``.

Same names and signatures as :mod:`gpucnn.backend.numpy_ops.softmax_xent`. An array is viewed
as ``(outer, L, inner)`` around the reduced axis, so no transpose is ever needed; row kernels
run one block per row (grid-stride over rows). CuPy is reached only through
:func:`~gpucnn.backend.runtime.current_runtime`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucnn.backend.runtime import current_runtime, dtype_suffix

__all__ = [
    "softmax_forward",
    "log_softmax_forward",
    "softmax_backward",
    "log_softmax_backward",
    "softmax_xent_forward",
    "softmax_xent_backward",
]

_FAMILY = "softmax_xent"
_MAX_BLOCK = 1024  # SX_MAX_BLOCK: size of the kernels' shared buffers


def _split(shape: tuple, axis: int) -> tuple[int, int, int]:
    """``(outer, L, inner)`` sizes of ``shape`` around ``axis``."""
    nd = len(shape)
    if not -nd <= axis < nd:
        raise ValueError(f"softmax: axis {axis} is out of range for shape {tuple(shape)}")
    ax = axis % nd
    outer = int(np.prod(shape[:ax], dtype=np.int64))
    inner = int(np.prod(shape[ax + 1 :], dtype=np.int64))
    return outer, int(shape[ax]), inner


def _row_block(rt: Any, length: int) -> int:
    """Threads per row: the runtime's block, shrunk (to a multiple of 32) for short rows."""
    block = min(rt.block, _MAX_BLOCK)
    if length < block:
        block = min(block, max(32, 1 << max(0, int(length) - 1).bit_length()))
    return block


def _rows_launch(name: str, x: Any, outs: tuple, axis: int, *extra_in: Any) -> None:
    rt = current_runtime()
    outer, length, inner = _split(x.shape, axis)
    rows = outer * inner
    if rows == 0 or length == 0:
        return
    block = _row_block(rt, length)
    grid = rt.grid_for(rows, 1)  # one block per row, capped by grid_cap
    rt.kernel(_FAMILY, f"{name}_{dtype_suffix(x.dtype, name)}")(
        (grid,),
        (block,),
        (x, *extra_in, *outs, np.int64(rows), np.int64(length), np.int64(inner)),
    )


def softmax_forward(x: Any, axis: int = -1) -> Any:
    """Softmax along ``axis``. Kernel ``softmax_fwd``: one block per row."""
    xp = current_runtime().xp
    xc = xp.ascontiguousarray(x)
    y = xp.empty_like(xc)
    _rows_launch("softmax_fwd", xc, (y,), axis)
    return y


def log_softmax_forward(x: Any, axis: int = -1) -> Any:
    """Log-softmax along ``axis``. Kernel ``log_softmax_fwd``: one block per row."""
    xp = current_runtime().xp
    xc = xp.ascontiguousarray(x)
    y = xp.empty_like(xc)
    _rows_launch("log_softmax_fwd", xc, (y,), axis)
    return y


def _bwd(name: str, y: Any, g: Any, axis: int) -> Any:
    xp = current_runtime().xp
    yc = xp.ascontiguousarray(y)
    gc = xp.ascontiguousarray(g, dtype=yc.dtype)
    if gc.shape != yc.shape:
        raise ValueError(f"{name}: grad shape {tuple(gc.shape)} != output {tuple(yc.shape)}")
    dx = xp.empty_like(yc)
    _rows_launch(name.replace("_backward", "_bwd"), yc, (dx,), axis, gc)
    return dx


def softmax_backward(y: Any, g: Any, axis: int = -1) -> Any:
    """``y * (g - sum(g * y))`` along ``axis``. Kernel ``softmax_bwd``: one block per row."""
    return _bwd("softmax_backward", y, g, axis)


def log_softmax_backward(y: Any, g: Any, axis: int = -1) -> Any:
    """``g - exp(y) * sum(g)`` along ``axis``. Kernel ``log_softmax_bwd``: one block per row."""
    return _bwd("log_softmax_backward", y, g, axis)


def _xent_args(xp: Any, shape: tuple, dtype: Any, target: Any, weight: Any) -> tuple[Any, Any]:
    c = int(shape[1])
    t = xp.ascontiguousarray(target, dtype=xp.int64)
    w = xp.ones(c, dtype=dtype) if weight is None else xp.ascontiguousarray(weight, dtype=dtype)
    return t, w


def softmax_xent_forward(
    logits: Any,
    target: Any,
    weight: Any = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
) -> tuple[Any, Any, Any]:
    """Fused softmax + cross-entropy per row: ``(loss, wrow, logp)`` (see the NumPy twin).

    Kernel ``softmax_xent_fwd``: one block per row (max, sum and smoothing reductions).
    """
    rt = current_runtime()
    xp = rt.xp
    x = xp.ascontiguousarray(logits)
    t, w = _xent_args(xp, x.shape, x.dtype, target, weight)
    outer, c, inner = _split(x.shape, 1)
    rows = outer * inner
    tshape = x.shape[:1] + x.shape[2:]
    loss = xp.empty(tshape, dtype=x.dtype)
    wrow = xp.empty(tshape, dtype=x.dtype)
    logp = xp.empty_like(x)
    if rows and c:
        rt.kernel(_FAMILY, f"softmax_xent_fwd_{dtype_suffix(x.dtype, 'softmax_xent_fwd')}")(
            (rt.grid_for(rows, 1),),
            (_row_block(rt, c),),
            (
                x, t, w, loss, wrow, logp,
                np.int64(rows), np.int64(c), np.int64(inner),
                np.int64(ignore_index), x.dtype.type(label_smoothing),
            ),
        )  # fmt: skip
    return loss, wrow, logp


def softmax_xent_backward(
    logp: Any,
    target: Any,
    weight: Any,
    grow: Any,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
) -> Any:
    """d(per-row loss * grow)/d(logits) (see the NumPy twin). Kernel ``softmax_xent_bwd``:
    one thread per element, grid-stride (each block first sums the class weights)."""
    rt = current_runtime()
    xp = rt.xp
    lp = xp.ascontiguousarray(logp)
    t, w = _xent_args(xp, lp.shape, lp.dtype, target, weight)
    gr = xp.ascontiguousarray(grow, dtype=lp.dtype)
    _, c, inner = _split(lp.shape, 1)
    n = int(lp.size)
    dx = xp.empty_like(lp)
    rt.launch(
        _FAMILY,
        f"softmax_xent_bwd_{dtype_suffix(lp.dtype, 'softmax_xent_bwd')}",
        n,
        (
            lp, t, w, gr, dx,
            np.int64(n), np.int64(c), np.int64(inner),
            np.int64(ignore_index), lp.dtype.type(label_smoothing),
        ),
        block=min(rt.block, _MAX_BLOCK),
    )  # fmt: skip
    return dx
