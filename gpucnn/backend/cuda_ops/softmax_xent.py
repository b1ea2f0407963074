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


_ONES_CACHE_MAX = 16
_ones_cache: dict[tuple, Any] = {}


def _device_key(a: Any) -> Any:
    dev = getattr(a, "device", None)
    return getattr(dev, "id", dev if isinstance(dev, (str, int)) else None)


def _ones(xp: Any, c: int, dtype: Any, like: Any) -> Any:
    """The unit class weights ``ones(c)``: one cached, never-written array per (module, device,
    c, dtype), so an unweighted training step allocates no weight vector (twice: forward and
    backward)."""
    key = (id(xp), _device_key(like), int(c), np.dtype(dtype).str)
    w = _ones_cache.get(key)
    if w is None:
        if len(_ones_cache) >= _ONES_CACHE_MAX:
            _ones_cache.clear()
        w = _ones_cache[key] = xp.ones(c, dtype=dtype)
    return w


def _xent_args(xp: Any, x: Any, target: Any, weight: Any) -> tuple[Any, Any]:
    c = int(x.shape[1])
    t = xp.ascontiguousarray(target, dtype=xp.int64)
    if weight is None:
        w = _ones(xp, c, x.dtype, x)
    else:
        w = xp.ascontiguousarray(weight, dtype=x.dtype)
    return t, w


def _err_buffer(xp: Any, err: Any) -> Any:
    if err is None:  # nobody reads it: the kernel still needs somewhere to record bad targets
        return xp.empty(2, dtype=xp.int64)
    if err.dtype != np.int64 or tuple(err.shape) != (2,) or not err.flags.c_contiguous:
        raise ValueError(
            "softmax_xent_forward: err must be a C-contiguous int64 array of shape (2,) "
            f"([smallest bad target, count]), got {err.dtype} {tuple(err.shape)}"
        )
    return err


def softmax_xent_forward(
    logits: Any,
    target: Any,
    weight: Any = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    err: Any = None,
) -> tuple[Any, Any, Any]:
    """Fused softmax + cross-entropy per row: ``(loss, wrow, logp)`` (see the NumPy twin).

    ``err`` (int64 ``(2,)`` on the device, or ``None``) is the device-side target range check:
    the kernel lowers ``err[0]`` to the smallest out-of-range target and adds their number to
    ``err[1]``, without a host sync. Kernel ``softmax_xent_fwd``: one block per row (max, sum
    and smoothing reductions).
    """
    rt = current_runtime()
    xp = rt.xp
    x = xp.ascontiguousarray(logits)
    t, w = _xent_args(xp, x, target, weight)
    e = _err_buffer(xp, err)
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
                x, t, w, loss, wrow, logp, e,
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
    t, w = _xent_args(xp, lp, target, weight)
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
