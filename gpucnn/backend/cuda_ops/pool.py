"""Pooling primitives on the CUDA backend: launchers of the kernels in ``cuda/pool2d.cu``.

Same names and signatures as :mod:`gpucnn.backend.numpy_ops.pool` (their NumPy twins).
Arrays come from ``current_runtime().xp`` (CuPy, or NumPy under the host emulator); inputs
are made C-contiguous before launch; argmax arrays are int64 (``h*W + w`` in the plane).
Every kernel is a 1-D grid-stride launch: forwards over output elements, backwards (gathers,
no atomics) over input elements.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucnn.backend.runtime import current_runtime, dtype_suffix

__all__ = [
    "maxpool2d_forward",
    "maxpool2d_backward",
    "avgpool2d_forward",
    "avgpool2d_backward",
    "adaptive_avgpool2d_forward",
    "adaptive_avgpool2d_backward",
    "adaptive_maxpool2d_forward",
    "adaptive_maxpool2d_backward",
]

_FAMILY = "pool2d"
_i32 = np.int32


def _ints(*vals: int) -> tuple:
    return tuple(_i32(v) for v in vals)


def maxpool2d_forward(
    x: Any,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    dh: int,
    dw: int,
    oh: int,
    ow: int,
) -> tuple[Any, Any]:
    """Max pooling (N, C, H, W) → ``(y, argmax int64)`` of shape (N, C, oh, ow); see the twin."""
    rt = current_runtime()
    xp = rt.xp
    x = xp.ascontiguousarray(x)
    n, c, h, w = x.shape
    y = xp.empty((n, c, oh, ow), dtype=x.dtype)
    arg = xp.empty((n, c, oh, ow), dtype=xp.int64)
    rt.launch(
        _FAMILY,
        f"maxpool2d_fwd_{dtype_suffix(x.dtype, 'maxpool2d_fwd')}",
        y.size,
        (x, y, arg, np.int64(n * c), *_ints(h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw)),
    )
    return y, arg


def maxpool2d_backward(
    dy: Any,
    argmax: Any,
    h: int,
    w: int,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    dh: int,
    dw: int,
) -> Any:
    """Max-pooling gradient: ``dx`` (N, C, h, w) from ``dy`` and ``argmax``; see the twin."""
    rt = current_runtime()
    xp = rt.xp
    dy = xp.ascontiguousarray(dy)
    argmax = xp.ascontiguousarray(argmax, dtype=xp.int64)
    n, c, oh, ow = dy.shape
    dx = xp.empty((n, c, h, w), dtype=dy.dtype)
    rt.launch(
        _FAMILY,
        f"maxpool2d_bwd_{dtype_suffix(dy.dtype, 'maxpool2d_bwd')}",
        dx.size,
        (dy, argmax, dx, np.int64(n * c), *_ints(h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw)),
    )
    return dx


def avgpool2d_forward(
    x: Any,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    oh: int,
    ow: int,
    count_include_pad: bool,
    divisor_override: int,
) -> Any:
    """Average pooling (N, C, H, W) → (N, C, oh, ow) with PyTorch's divisors; see the twin."""
    rt = current_runtime()
    xp = rt.xp
    x = xp.ascontiguousarray(x)
    n, c, h, w = x.shape
    y = xp.empty((n, c, oh, ow), dtype=x.dtype)
    rt.launch(
        _FAMILY,
        f"avgpool2d_fwd_{dtype_suffix(x.dtype, 'avgpool2d_fwd')}",
        y.size,
        (
            x,
            y,
            np.int64(n * c),
            *_ints(
                h,
                w,
                oh,
                ow,
                kh,
                kw,
                sh,
                sw,
                ph,
                pw,
                int(bool(count_include_pad)),
                max(int(divisor_override), 0),
            ),
        ),
    )
    return y


def avgpool2d_backward(
    dy: Any,
    h: int,
    w: int,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    count_include_pad: bool,
    divisor_override: int,
) -> Any:
    """Average-pooling gradient: ``dx`` (N, C, h, w) from ``dy`` (N, C, oh, ow); see the twin."""
    rt = current_runtime()
    xp = rt.xp
    dy = xp.ascontiguousarray(dy)
    n, c, oh, ow = dy.shape
    dx = xp.empty((n, c, h, w), dtype=dy.dtype)
    rt.launch(
        _FAMILY,
        f"avgpool2d_bwd_{dtype_suffix(dy.dtype, 'avgpool2d_bwd')}",
        dx.size,
        (
            dy,
            dx,
            np.int64(n * c),
            *_ints(
                h,
                w,
                oh,
                ow,
                kh,
                kw,
                sh,
                sw,
                ph,
                pw,
                int(bool(count_include_pad)),
                max(int(divisor_override), 0),
            ),
        ),
    )
    return dx


def adaptive_avgpool2d_forward(x: Any, oh: int, ow: int) -> Any:
    """Adaptive average pooling (N, C, H, W) → (N, C, oh, ow); see the twin."""
    rt = current_runtime()
    xp = rt.xp
    x = xp.ascontiguousarray(x)
    n, c, h, w = x.shape
    y = xp.empty((n, c, oh, ow), dtype=x.dtype)
    rt.launch(
        _FAMILY,
        f"adaptive_avgpool2d_fwd_{dtype_suffix(x.dtype, 'adaptive_avgpool2d_fwd')}",
        y.size,
        (x, y, np.int64(n * c), *_ints(h, w, oh, ow)),
    )
    return y


def adaptive_avgpool2d_backward(dy: Any, h: int, w: int) -> Any:
    """Adaptive average-pooling gradient: ``dx`` (N, C, h, w); see the twin."""
    rt = current_runtime()
    xp = rt.xp
    dy = xp.ascontiguousarray(dy)
    n, c, oh, ow = dy.shape
    dx = xp.empty((n, c, h, w), dtype=dy.dtype)
    rt.launch(
        _FAMILY,
        f"adaptive_avgpool2d_bwd_{dtype_suffix(dy.dtype, 'adaptive_avgpool2d_bwd')}",
        dx.size,
        (dy, dx, np.int64(n * c), *_ints(h, w, oh, ow)),
    )
    return dx


def adaptive_maxpool2d_forward(x: Any, oh: int, ow: int) -> tuple[Any, Any]:
    """Adaptive max pooling (N, C, H, W) → ``(y, argmax int64)``, (N, C, oh, ow); see the twin."""
    rt = current_runtime()
    xp = rt.xp
    x = xp.ascontiguousarray(x)
    n, c, h, w = x.shape
    y = xp.empty((n, c, oh, ow), dtype=x.dtype)
    arg = xp.empty((n, c, oh, ow), dtype=xp.int64)
    rt.launch(
        _FAMILY,
        f"adaptive_maxpool2d_fwd_{dtype_suffix(x.dtype, 'adaptive_maxpool2d_fwd')}",
        y.size,
        (x, y, arg, np.int64(n * c), *_ints(h, w, oh, ow)),
    )
    return y, arg


def adaptive_maxpool2d_backward(dy: Any, argmax: Any, h: int, w: int) -> Any:
    """Adaptive max-pooling gradient: ``dx`` (N, C, h, w); see the twin."""
    rt = current_runtime()
    xp = rt.xp
    dy = xp.ascontiguousarray(dy)
    argmax = xp.ascontiguousarray(argmax, dtype=xp.int64)
    n, c, oh, ow = dy.shape
    dx = xp.empty((n, c, h, w), dtype=dy.dtype)
    rt.launch(
        _FAMILY,
        f"adaptive_maxpool2d_bwd_{dtype_suffix(dy.dtype, 'adaptive_maxpool2d_bwd')}",
        dx.size,
        (dy, argmax, dx, np.int64(n * c), *_ints(h, w, oh, ow)),
    )
    return dx
