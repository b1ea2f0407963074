"""The NumPy "frame" (wide) route: columns ``(C*kh*kw, N*oh*Wq)`` built from long contiguous
runs of the padded input (:func:`gpucnn.backend.numpy_ops.im2col._wide_im2col`), the batch folded
into the GEMM's columns, garbage columns ``x >= ow`` dropped when ``y`` is written back as NCHW.
Rule: :func:`_use_wide_path`. Tested against :mod:`.reference`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucnn.backend import geometry


def _use_wide_path(kw: int, sw: int, dw: int, ow: int) -> bool:
    """Whether the NumPy frame layout pays: its columns are ``Wq/ow`` times wider than im2col's
    (``Wq = ow + ((kw-1)*dw)//sw``), so skip it when garbage would be most of each row."""
    return ow + ((kw - 1) * dw) // sw <= 2 * ow


# Samples per chunk on the NumPy wide path: columns of about this many bytes stay in cache
# between im2col and the GEMMs (the full column matrix is never built).
_CHUNK_BYTES = 2 << 20


def _chunk(n: int, per_sample: int) -> int:
    """Samples per chunk for ``per_sample`` bytes of wide columns each (at least 1)."""
    return max(1, min(n, _CHUNK_BYTES // max(per_sample, 1)))


def _wide_forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    stride: tuple[int, int],
    pads: tuple[int, int],
    dilation: tuple[int, int],
    g: int,
    oh: int,
    ow: int,
) -> tuple[np.ndarray, np.ndarray, Any]:
    """NumPy forward on wide columns: ``(y (N, O, oh, ow), frames, geometry)``.

    ``pads`` are the top/left pads; bottom/right follow from ``oh``/``ow``. ``x`` is copied once
    into the frame layout (kept for the weight gradient); then per chunk of samples: wide
    columns, one GEMM per group into ``(O, nb, oh, Wq)``, and the real columns copied into the
    NCHW ``y`` with the bias added in the same pass.
    """
    from gpucnn.backend.numpy_ops.im2col import _FrameGeometry

    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    og, ckg = o // g, cg * kh * kw
    geo = _FrameGeometry(n, c, h, w, kh, kw, *stride, *pads, *dilation, oh, ow)
    frames = geo.to_frames(x)
    run, dt = geo.run, x.dtype
    nb = _chunk(n, c * kh * kw * run * dt.itemsize)
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


def _wide_backward(
    gy: np.ndarray,
    frames: np.ndarray | None,
    geo: Any,
    weight: np.ndarray | None,
    geom: tuple,
    need_x: bool,
    need_w: bool,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """NumPy ``(dx, dW)`` from :func:`_wide_forward`'s saved ``frames`` and geometry.

    Per chunk of samples, ``dy`` is laid out wide, ``(O, nb, oh, Wq)`` with zero garbage
    columns, the wide columns are rebuilt from ``frames`` (cheaper than keeping them), and
    ``dW += dy_wide @ cols^T`` per group. ``dx`` is either a stride-1 convolution of ``dy``
    with the flipped kernel (itself on the wide path, see :func:`_use_transposed_path`) or
    ``W^T @ dy_wide`` scatter-added into frames and read back as NCHW.
    """
    n, c, h, w, o, cg, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, g, _ = geom
    og, ckg = o // g, cg * kh * kw
    gx = gw = None
    transposed = need_x and geometry.use_transposed_path(geom)
    scatter = need_x and not transposed
    if need_w or scatter:
        run, wq, dt = geo.run, geo.wq, gy.dtype
        nb = _chunk(n, c * kh * kw * run * dt.itemsize)
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
        back_pads = (dh * (kh - 1) - pt, dw * (kw - 1) - pl)
        gx = _wide_forward(gy, wf, None, (1, 1), back_pads, (dh, dw), g, h, w)[0]
    return gx, gw
