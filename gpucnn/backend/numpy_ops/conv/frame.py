"""The NumPy "frame" (wide) route: columns ``(C*kh*kw, N*oh*Wq)`` built from long contiguous
runs of the padded input (:func:`gpucnn.backend.numpy_ops.im2col._wide_im2col`), the batch folded
into the GEMM's columns, garbage columns ``x >= ow`` dropped when ``y`` is written back as NCHW.
Rule: :func:`applies_well`. Tested against :mod:`.reference`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucnn.backend import geometry
from gpucnn.backend.geometry import Conv2dGeometry
from gpucnn.backend.numpy_ops.im2col import _FrameGeometry


def applies_well(geom: Conv2dGeometry) -> bool:
    """Whether the frame layout pays: its columns are ``Wq/ow`` times wider than im2col's
    (``Wq = ow + ((kw-1)*dw)//sw``), so skip it when garbage would be most of each row."""
    return geom.ow + ((geom.kw - 1) * geom.dw) // geom.sw <= 2 * geom.ow


def _chunk(n: int, per_sample: int, workspace_bytes: int) -> int:
    """Samples per chunk: wide columns of about ``workspace_bytes`` stay in cache between
    im2col and the GEMMs (the full column matrix is never built); at least 1."""
    return max(1, min(n, workspace_bytes // max(per_sample, 1)))


def forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    geom: Conv2dGeometry,
    workspace_bytes: int,
) -> tuple[np.ndarray, np.ndarray, Any]:
    """``(y (N, O, oh, ow), frames, layout)`` on wide columns.

    ``x`` is copied once into the frame layout (kept for the weight gradient); then per chunk
    of samples (``workspace_bytes`` of columns): wide columns, one GEMM per group into
    ``(O, nb, oh, Wq)``, and the real columns copied into the NCHW ``y`` with the bias added in
    the same pass.
    """
    n, c, o, kh, kw, g = geom.n, geom.c, geom.o, geom.kh, geom.kw, geom.groups
    oh, ow = geom.oh, geom.ow
    og, ckg = o // g, geom.cg * kh * kw
    geo = _FrameGeometry(n, c, geom.h, geom.w, *geom.window)
    frames = geo.to_frames(x)
    run, dt = geo.run, x.dtype
    nb = _chunk(n, c * kh * kw * run * dt.itemsize, workspace_bytes)
    colbuf = np.empty(c * kh * kw * nb * run, dt)
    ybuf = np.empty(o * nb * run, dt)
    w3 = weight.reshape(g, og, ckg)
    b4 = None if bias is None else bias.astype(dt, copy=False).reshape(1, o, 1, 1)
    y = np.empty((n, o, oh, ow), dtype=dt)
    for n0 in range(0, n, nb):
        n1 = min(n, n0 + nb)
        m = (n1 - n0) * run
        cols = geo.cols(frames, n0, n1, out=colbuf).reshape(g, ckg, m)
        yw = ybuf[: o * m].reshape(g, og, m)
        np.matmul(w3, cols, out=yw)
        src = yw.reshape(o, n1 - n0, oh, geo.wq)[:, :, :, :ow].transpose(1, 0, 2, 3)
        if b4 is None:
            y[n0:n1] = src
        else:
            np.add(src, b4, out=y[n0:n1])
    return y, frames, geo


def backward(
    gy: np.ndarray,
    frames: np.ndarray | None,
    geo: Any,
    weight: np.ndarray | None,
    geom: Conv2dGeometry,
    need_x: bool,
    need_w: bool,
    workspace_bytes: int,
    input_grad: str | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(dx, dW)`` from :func:`forward`'s saved ``frames`` and layout ``geo``.

    Per chunk of samples, ``dy`` is laid out wide, ``(O, nb, oh, Wq)`` with zero garbage
    columns, the wide columns are rebuilt from ``frames`` (cheaper than keeping them), and
    ``dW += dy_wide @ cols^T`` per group. ``dx`` is either a stride-1 convolution of ``dy``
    with the flipped kernel (itself on the frame route, see
    :func:`gpucnn.backend.geometry.input_grad_path`) or ``W^T @ dy_wide`` scatter-added
    into frames and read back as NCHW.
    """
    n, c, o, cg, kh, kw, g = geom.n, geom.c, geom.o, geom.cg, geom.kh, geom.kw, geom.groups
    oh, ow = geom.oh, geom.ow
    og, ckg = o // g, cg * kh * kw
    gx = gw = None
    transposed = need_x and geometry.input_grad_path(geom, input_grad) == "transposed"
    scatter = need_x and not transposed
    if need_w or scatter:
        run, wq, dt = geo.run, geo.wq, gy.dtype
        nb = _chunk(n, c * kh * kw * run * dt.itemsize, workspace_bytes)
        gybuf = np.empty(o * nb * run, dt)
        colbuf = np.empty(c * kh * kw * nb * run, dt) if need_w else None
        dcolbuf = np.empty(c * kh * kw * nb * run, dt) if scatter else None
        gw = np.zeros((g, og, ckg), dt) if need_w else None
        dframes = geo.new_frames(dt) if scatter else None
        wt = weight.reshape(g, og, ckg).transpose(0, 2, 1) if scatter else None
        for n0 in range(0, n, nb):
            n1 = min(n, n0 + nb)
            m = (n1 - n0) * run
            gyw = gybuf[: o * m].reshape(o, n1 - n0, oh, wq)
            gyw[:, :, :, :ow] = gy[n0:n1].transpose(1, 0, 2, 3)
            gyw[:, :, :, ow:] = 0
            g3 = gyw.reshape(g, og, m)
            if need_w:
                cols = geo.cols(frames, n0, n1, out=colbuf).reshape(g, ckg, m)
                gw += np.matmul(g3, cols.transpose(0, 2, 1))
            if scatter:
                dcols = dcolbuf[: c * kh * kw * m].reshape(g, ckg, m)
                np.matmul(wt, g3, out=dcols)
                geo.scatter_add(dcols.reshape(-1, m), dframes, n0, n1)
        if need_w:
            gw = gw.reshape(o, cg, kh, kw)
        if scatter:
            gx = geo.from_frames(dframes)
    if transposed:
        # dx = conv(dy, W') with W'[c, o, i, j] = W[o, c, kh-1-i, kw-1-j] per group, stride 1,
        # top/left pads dilation*(k-1) - pad: the correlation with the flipped kernel.
        wf = weight.reshape(g, og, cg, kh, kw)[:, :, :, ::-1, ::-1].transpose(0, 2, 1, 3, 4)
        wf = np.ascontiguousarray(wf).reshape(c, og, kh, kw)
        gx = forward(gy, wf, None, geom.input_grad_as_conv(), workspace_bytes)[0]
    return gx, gw
