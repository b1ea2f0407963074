"""CUDA launchers of ``cuda/im2col.cu``: im2col and col2im, per sample ``(N, C*kh*kw, L)`` and
batch-in-columns ``(C*kh*kw, N*L)`` (``_cn``; same signatures as the NumPy twins).

``xp`` and kernels come from :func:`gpucnn.backend.runtime.current_runtime`, so the host
emulator can run these launchers on NumPy arrays. Layout: see
:mod:`gpucnn.backend.numpy_ops.im2col`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucnn.backend.numpy_ops.im2col import (
    check_col2im_args,
    check_col2im_cn_args,
    check_im2col_args,
)
from gpucnn.backend.runtime import current_runtime, dtype_suffix

__all__ = ["im2col", "col2im", "im2col_cn", "col2im_cn"]


def _geometry_args(g: dict[str, int], C: int, H: int, W: int) -> tuple:
    return tuple(
        np.int32(v)
        for v in (
            C,
            H,
            W,
            g["kh"],
            g["kw"],
            g["sh"],
            g["sw"],
            g["ph"],
            g["pw"],
            g["dh"],
            g["dw"],
            g["oh"],
            g["ow"],
        )
    )


def im2col(
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
) -> Any:
    """Columns ``(N, C*kh*kw, oh*ow)`` of ``x (N, C, H, W)``; one thread per output position."""
    g = check_im2col_args(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    rt = current_runtime()
    xp = rt.xp
    N, C, H, W = g["N"], g["C"], g["H"], g["W"]
    x = xp.ascontiguousarray(x)
    cols = xp.empty((N, C * g["kh"] * g["kw"], g["oh"] * g["ow"]), dtype=x.dtype)
    total = N * C * g["oh"] * g["ow"]
    rt.launch(
        "im2col",
        f"im2col_{dtype_suffix(x.dtype, 'im2col')}",
        total,
        (x, cols, np.int64(total), *_geometry_args(g, C, H, W)),
    )
    return cols


def col2im(
    cols: Any,
    n: int,
    c: int,
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
    oh: int,
    ow: int,
) -> Any:
    """Adjoint of :func:`im2col` as a gather (one thread per pixel, no atomics)."""
    g = check_col2im_args(cols, n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    rt = current_runtime()
    xp = rt.xp
    N, C, H, W = g["n"], g["c"], g["h"], g["w"]
    cols = xp.ascontiguousarray(cols)
    x = xp.empty((N, C, H, W), dtype=cols.dtype)
    total = N * C * H * W
    rt.launch(
        "im2col",
        f"col2im_{dtype_suffix(cols.dtype, 'col2im')}",
        total,
        (cols, x, np.int64(total), *_geometry_args(g, C, H, W)),
    )
    return x


def im2col_cn(
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
) -> Any:
    """Batch-in-columns columns ``(C*kh*kw, N*oh*ow)`` of ``x (N, C, H, W)`` (column
    ``n*oh*ow + y*ow + x``); one thread per (channel, sample, output position)."""
    g = check_im2col_args(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, op="im2col_cn")
    rt = current_runtime()
    xp = rt.xp
    N, C, H, W = g["N"], g["C"], g["H"], g["W"]
    x = xp.ascontiguousarray(x)
    cols = xp.empty((C * g["kh"] * g["kw"], N * g["oh"] * g["ow"]), dtype=x.dtype)
    total = N * C * g["oh"] * g["ow"]
    rt.launch(
        "im2col",
        f"im2col_cn_{dtype_suffix(x.dtype, 'im2col_cn')}",
        total,
        (x, cols, np.int64(total), *_geometry_args(g, C, H, W)),
    )
    return cols


def col2im_cn(
    cols: Any,
    n: int,
    c: int,
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
    oh: int,
    ow: int,
) -> Any:
    """Adjoint of :func:`im2col_cn` as a gather (one thread per pixel, no atomics)."""
    g = check_col2im_cn_args(cols, n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    rt = current_runtime()
    xp = rt.xp
    N, C, H, W = g["n"], g["c"], g["h"], g["w"]
    cols = xp.ascontiguousarray(cols)
    x = xp.empty((N, C, H, W), dtype=cols.dtype)
    total = N * C * H * W
    rt.launch(
        "im2col",
        f"col2im_cn_{dtype_suffix(cols.dtype, 'col2im_cn')}",
        total,
        (cols, x, np.int64(total), *_geometry_args(g, C, H, W)),
    )
    return x
