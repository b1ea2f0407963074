"""CUDA launchers of ``cuda/im2col.cu``: im2col and col2im, per sample ``(N, C*kh*kw, L)`` and
batch-in-columns ``(C*kh*kw, N*L)`` (``_cn``; same signatures as the NumPy twins).

``xp`` and kernels come from :func:`gpucnn.backend.runtime.current_runtime`, so the host
emulator can run these launchers on NumPy arrays. Layout: see
:mod:`gpucnn.backend.numpy_ops.im2col`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucnn.backend.geometry import (
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


def _im2col(name: str, x: Any, geom: tuple, batch_in_columns: bool) -> Any:
    """Launch ``name`` (``im2col`` or ``im2col_cn``): one thread per (n, c, output position)."""
    g = check_im2col_args(x, *geom, op=name)
    rt = current_runtime()
    xp = rt.xp
    N, C, H, W = g["N"], g["C"], g["H"], g["W"]
    rows, L = C * g["kh"] * g["kw"], g["oh"] * g["ow"]
    x = xp.ascontiguousarray(x)
    cols = xp.empty((rows, N * L) if batch_in_columns else (N, rows, L), dtype=x.dtype)
    total = N * C * L
    rt.launch(
        "im2col",
        f"{name}_{dtype_suffix(x.dtype, name)}",
        total,
        (x, cols, np.int64(total), *_geometry_args(g, C, H, W)),
    )
    return cols


def _col2im(name: str, check: Any, cols: Any, shape_geom: tuple) -> Any:
    """Launch ``name`` (``col2im`` or ``col2im_cn``): a gather, one thread per pixel."""
    g = check(cols, *shape_geom)
    rt = current_runtime()
    xp = rt.xp
    N, C, H, W = g["n"], g["c"], g["h"], g["w"]
    cols = xp.ascontiguousarray(cols)
    x = xp.empty((N, C, H, W), dtype=cols.dtype)
    total = N * C * H * W
    rt.launch(
        "im2col",
        f"{name}_{dtype_suffix(cols.dtype, name)}",
        total,
        (cols, x, np.int64(total), *_geometry_args(g, C, H, W)),
    )
    return x


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
    return _im2col("im2col", x, (kh, kw, sh, sw, ph, pw, dh, dw, oh, ow), False)


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
    geom = (n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    return _col2im("col2im", check_col2im_args, cols, geom)


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
    return _im2col("im2col_cn", x, (kh, kw, sh, sw, ph, pw, dh, dw, oh, ow), True)


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
    geom = (n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    return _col2im("col2im_cn", check_col2im_cn_args, cols, geom)
