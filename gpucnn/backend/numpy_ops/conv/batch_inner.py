"""The NumPy batch-innermost route for small images: ``x`` transposed once to a padded
``(C, Hp, Wp, N)``, garbage-free columns ``(C*kh*kw, oh*ow*N)`` per chunk of output rows,
``y = W @ cols`` as ``(O, oh, ow, N)`` transposed back to NCHW with the bias fused; ``dx`` by the
flipped-kernel correlation in the same layout or ``W^T @ dy`` added back per kernel offset.
Rule: :func:`applies_well` (measured constants beside it). Tested against
:mod:`.reference`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucnn.backend import geometry
from gpucnn.backend.geometry import Conv2dGeometry
from gpucnn.backend.numpy_ops.conv.winograd import _buffer
from gpucnn.backend.numpy_ops.im2col import (
    _BatchInnerGeometry,
    _from_batch_inner,
    _to_batch_inner,
)


def applies_well(geom: Conv2dGeometry) -> bool:
    """Whether the batch-innermost layout beats the frame layout (measured, see the constants
    below): the frame layout wastes ``(Wq - ow) / Wq`` of every GEMM on garbage columns, the
    batch-innermost one pays four blocked transposes (x, y, dy, dx) instead."""
    ow = geom.ow
    wq = ow + ((geom.kw - 1) * geom.dw) // geom.sw
    return geom.n * ow >= _BATCH_INNER_MIN_RUN and (wq - ow) * _BATCH_INNER_JUNK_DEN >= wq


# Rule constants of :func:`_use_batch_inner_path`, measured with one BLAS thread on float32
# convs fwd+bwd (N=128 unless noted; ratio of the batch-innermost to the frame route's time):
# LeNet 6->16 14x14 k5 (garbage 29%) 0.8; 64->64 8x8 (20%) 0.9; 128->128 4x4 (33%) 0.7;
# 64->128 8x8 s2 (20%) 0.8; 32->32 16x16 and 32->64 16x16 s2 (11%) 0.9; LeNet 1->6 28x28 pad 2
# (12.5%) 0.5-0.8; 64->64 8x8 with N=4 (runs of 32) 0.8; but 16->16 32x32 and 16->32 32x32 s2
# (6%) 1.1. Hence: garbage of at least 1/_BATCH_INNER_JUNK_DEN of the frame row, and copy runs
# (``N*ow`` elements) of at least _BATCH_INNER_MIN_RUN.
_BATCH_INNER_MIN_RUN = 32
_BATCH_INNER_JUNK_DEN = 10


def forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    geom: Conv2dGeometry,
    workspace_bytes: int,
) -> tuple[np.ndarray, np.ndarray, Any]:
    """``(y (N, O, oh, ow), P, layout)`` in the batch-innermost layout.

    ``x`` is transposed once into the padded ``P (C, Hp, Wp, N)`` (kept for the weight
    gradient). Per chunk of output rows (``workspace_bytes`` of columns, at least one row),
    the columns ``(C*kh*kw, rows*ow*N)`` (no garbage) go through one GEMM per group into
    ``yt (O, oh*ow*N)``; ``yt`` is transposed to NCHW with the bias added in the same pass.
    """
    n, o, g, oh, ow = geom.n, geom.o, geom.groups, geom.oh, geom.ow
    og, ckg, dt = o // g, geom.cg * geom.kh * geom.kw, x.dtype
    geo = _BatchInnerGeometry(n, geom.c, geom.h, geom.w, *geom.window)
    padded = geo.to_padded(x)
    rows = _rows_per_chunk(geo, dt, workspace_bytes)
    colbuf = np.empty(rows * geo.row_size, dt)
    w3 = weight.reshape(g, og, ckg)
    yt = np.empty((g, og, oh * ow * n), dt)
    step = ow * n
    for y0 in range(0, oh, rows):
        y1 = min(oh, y0 + rows)
        cols = geo.cols(padded, y0, y1, out=colbuf).reshape(g, ckg, -1)
        np.matmul(w3, cols, out=yt[:, :, y0 * step : y1 * step])
    y = np.empty((n, o, oh, ow), dtype=dt)
    add = None if bias is None else bias.astype(dt, copy=False).reshape(o, 1, 1)
    _from_batch_inner(yt.reshape(o, oh, ow, n), y, add=add)
    return y, padded, geo


def _rows_per_chunk(geo: Any, dt: np.dtype, workspace_bytes: int) -> int:
    """Output rows per chunk of batch-innermost columns (at least 1, at most all)."""
    per_row = max(geo.row_size * np.dtype(dt).itemsize, 1)
    return max(1, min(geo.oh, workspace_bytes // per_row))


def backward(
    gy: np.ndarray,
    padded: np.ndarray | None,
    geo: Any,
    weight: np.ndarray | None,
    geom: Conv2dGeometry,
    need_x: bool,
    need_w: bool,
    workspace_bytes: int,
    input_grad: str | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(dx, dW)`` from :func:`forward`'s saved ``P`` and layout ``geo``.

    ``dy`` is transposed once to ``dyt (O, oh*ow*N)``. Per chunk of output rows the columns
    are rebuilt from ``P`` for ``dW += dy_chunk @ cols^T`` (one GEMM, the batch in its inner
    dimension). ``dx`` is either the stride-1 correlation of the padded ``dyt`` with the
    flipped kernel (:func:`gpucnn.backend.geometry.input_grad_path`; itself a
    batch-innermost forward, without leaving the layout) or ``W^T @ dy_chunk`` added into a
    padded ``dP (C, Hp, Wp, N)`` one kernel offset at a time; either ends with one transpose
    back to NCHW.
    """
    n, c, h, w, o, cg = geom.n, geom.c, geom.h, geom.w, geom.o, geom.cg
    kh, kw, oh, ow, g = geom.kh, geom.kw, geom.oh, geom.ow, geom.groups
    og, ckg, dt = o // g, cg * kh * kw, gy.dtype
    if not (need_x or need_w):
        return None, None
    # scratch (reused across calls: no page faults on fresh pages); neither escapes
    dyt = _buffer("dyt", o * oh * ow * n, dt).reshape(o, oh, ow, n)
    _to_batch_inner(gy, dyt)
    d3 = dyt.reshape(g, og, -1)
    transposed = need_x and geometry.input_grad_path(geom, input_grad) == "transposed"
    scatter = need_x and not transposed
    rows = _rows_per_chunk(geo, dt, workspace_bytes)
    single = rows >= oh
    step = ow * n
    gw = gx = None
    if need_w or scatter:
        colbuf = _buffer("cols", rows * geo.row_size, dt) if need_w else None
        dcolbuf = np.empty(rows * geo.row_size, dt) if scatter else None
        gw = (np.empty if single else np.zeros)((g, og, ckg), dt) if need_w else None
        dp = geo.new_padded(dt) if scatter else None
        wt = weight.reshape(g, og, ckg).transpose(0, 2, 1) if scatter else None
        for y0 in range(0, oh, rows):
            y1 = min(oh, y0 + rows)
            gyc = d3[:, :, y0 * step : y1 * step]
            if need_w:
                cols = geo.cols(padded, y0, y1, out=colbuf).reshape(g, ckg, -1)
                if single:
                    np.matmul(gyc, cols.transpose(0, 2, 1), out=gw)
                else:
                    gw += np.matmul(gyc, cols.transpose(0, 2, 1))
            if scatter:
                dcols = dcolbuf[: (y1 - y0) * geo.row_size].reshape(g, ckg, -1)
                np.matmul(wt, gyc, out=dcols)
                geo.add_cols(dcols.reshape(g * ckg, -1), dp, y0, y1)
        if scatter:
            gx = geo.from_padded(dp)
    if transposed:
        gx = np.empty((n, c, h, w), dt)
        _from_batch_inner(_transposed_input_grad(dyt, weight, geom, workspace_bytes), gx)
    return gx, (gw.reshape(o, cg, kh, kw) if need_w else None)


def _transposed_input_grad(
    dyt: np.ndarray, weight: np.ndarray, geom: Conv2dGeometry, workspace_bytes: int
) -> np.ndarray:
    """``dx (C, H, W, N)`` of a stride-1 convolution from ``dyt (O, oh, ow, N)``.

    ``dx[c, y, x] = sum_{o,i,j} W[o, c, i, j] dy[o, y + pt - i*dh, x + pl - j*dw]``: the
    correlation of ``dy`` padded by ``dilation*(k-1) - pad`` (top/left) with the flipped kernel
    ``W'[c, o, i, j] = W[o, c, kh-1-i, kw-1-j]`` (per group), output ``H x W``
    (:meth:`~gpucnn.backend.geometry.Conv2dGeometry.input_grad_as_conv`).
    """
    n, c, h, w, o, cg = geom.n, geom.c, geom.h, geom.w, geom.o, geom.cg
    kh, kw, g = geom.kh, geom.kw, geom.groups
    og, dt = o // g, dyt.dtype
    bg = geom.input_grad_as_conv()
    back = _BatchInnerGeometry(bg.n, bg.c, bg.h, bg.w, *bg.window)
    padded = back.pad_batch_inner(dyt)
    wf = weight.reshape(g, og, cg, kh, kw)[:, :, :, ::-1, ::-1].transpose(0, 2, 1, 3, 4)
    wf = np.ascontiguousarray(wf).reshape(g, cg, og * kh * kw)
    rows = _rows_per_chunk(back, dt, workspace_bytes)
    colbuf = np.empty(rows * back.row_size, dt)
    dxt = np.empty((g, cg, h * w * n), dt)
    step = w * n
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        cols = back.cols(padded, y0, y1, out=colbuf).reshape(g, og * kh * kw, -1)
        np.matmul(wf, cols, out=dxt[:, :, y0 * step : y1 * step])
    return dxt.reshape(c, h, w, n)
