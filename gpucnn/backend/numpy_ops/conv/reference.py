"""The readable reference convolution: im2col + GEMM forward, GEMMs + col2im backward (NumPy).

Every other route (frame, batch-innermost, Winograd, the CUDA kernels) is tested against it.
``cols`` is ``im2col(x)`` (N, C*kh*kw, L) with row ``(c*kh + i)*kw + j``, so the rows of group
``g`` are one contiguous block and every GEMM is a batched ``matmul``:

* forward: ``y[n] = W (O, C*k) @ cols[n] (C*k, L)`` per group, then ``bias_add_nchw``;
* backward: ``dcols[n] = W^T @ dy[n]`` then ``col2im`` (a gather) for ``dx`` (or, for stride 1
  where :func:`gpucnn.backend.geometry.use_transposed_path` says so, the correlation of ``dy``
  with the flipped kernel); ``dW = sum_n dy[n] @ cols[n]^T``.

A 1x1 convolution with stride 1 and no padding skips im2col: ``cols`` is ``x`` viewed as
(N, C, H*W). ``geom`` is a :class:`~gpucnn.backend.geometry.Conv2dGeometry` throughout.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucnn.backend import geometry
from gpucnn.backend.geometry import Conv2dGeometry
from gpucnn.backend.numpy_ops.bias import bias_add_nchw
from gpucnn.backend.numpy_ops.im2col import col2im, im2col


def columns(x: np.ndarray, geom: Conv2dGeometry) -> np.ndarray:
    """``cols (N, C*kh*kw, L)`` of ``x`` (a view of ``x`` for a plain 1x1 convolution)."""
    if geom.pointwise:
        return x.reshape(geom.n, geom.c, geom.h * geom.w)
    return im2col(x, *geom.window)


def forward(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, geom: Conv2dGeometry
) -> tuple[np.ndarray, np.ndarray]:
    """``(y (N, O, oh, ow), cols)``: ``y = W @ cols`` per group, plus the bias."""
    n, o, g, oh, ow = geom.n, geom.o, geom.groups, geom.oh, geom.ow
    og, ckg, L = o // g, geom.cg * geom.kh * geom.kw, oh * ow
    cols = columns(x, geom)
    w2 = weight.reshape(g, og, ckg)
    if g == 1:
        y = np.matmul(w2[0], cols)  # (O, Ck) @ (N, Ck, L) -> (N, O, L): NCHW already
    else:
        y = np.matmul(w2, cols.reshape(n, g, ckg, L))  # (N, g, O/g, L)
    y = y.reshape(n, o, oh, ow)
    if bias is not None:
        bias_add_nchw(y, bias)
    return y, cols


def backward(
    gy: np.ndarray,
    cols: np.ndarray | None,
    weight: np.ndarray | None,
    geom: Conv2dGeometry,
    need_x: bool,
    need_w: bool,
    input_grad: str | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(dx, dW)`` from ``cols`` (for ``dW``) and ``weight`` (for ``dx``); ``dx`` by the path
    :func:`gpucnn.backend.geometry.input_grad_path` picks (or ``input_grad`` names)."""
    n, c, h, w, o, cg = geom.n, geom.c, geom.h, geom.w, geom.o, geom.cg
    kh, kw, g = geom.kh, geom.kw, geom.groups
    og, ckg, L = o // g, cg * kh * kw, geom.oh * geom.ow
    gx = gw = None
    g4 = gy.reshape(n, g, og, L)
    if need_x and geometry.input_grad_path(geom, input_grad) == "transposed":
        gx = _input_grad_as_conv(gy, weight, geom)
    elif need_x:
        w2t = weight.reshape(g, og, ckg).transpose(0, 2, 1)  # (g, Ck/g, O/g)
        if g == 1:
            dcols = np.matmul(w2t[0], gy.reshape(n, o, L))  # (N, Ck, L)
        else:
            dcols = np.matmul(w2t, g4).reshape(n, c * kh * kw, L)
        if geom.pointwise:
            gx = dcols.reshape(n, c, h, w)
        else:
            gx = col2im(dcols, n, c, h, w, *geom.window)
    if need_w:
        gw = _weight_grad(np, g4, cols.reshape(n, g, ckg, L)).reshape(o, cg, kh, kw)
    return gx, gw


def _input_grad_as_conv(gy: np.ndarray, weight: np.ndarray, geom: Conv2dGeometry) -> np.ndarray:
    """``dx`` of a stride-1 convolution: im2col of ``dy`` with the flipped kernel, then GEMM
    (the convolution :meth:`~gpucnn.backend.geometry.Conv2dGeometry.input_grad_as_conv`)."""
    n, c, h, w, o, cg = geom.n, geom.c, geom.h, geom.w, geom.o, geom.cg
    kh, kw, g = geom.kh, geom.kw, geom.groups
    og = o // g
    # dx[n, c, y, x] = sum_{o,i,j} W[o, c, i, j] dy[n, o, y + pt - i*dh, x + pl - j*dw]
    cols = im2col(gy, *geom.input_grad_as_conv().window)
    # flipped kernel per group: (g, C/g, O/g*kh*kw) with column index (o*kh + i)*kw + j
    wf = weight[:, :, ::-1, ::-1].reshape(g, og, cg, kh * kw).transpose(0, 2, 1, 3)
    wf = np.ascontiguousarray(wf).reshape(g, cg, og * kh * kw)
    if g == 1:
        gx = np.matmul(wf[0], cols)  # (C, O*k) @ (N, O*k, HW) -> (N, C, HW)
    else:
        gx = np.matmul(wf, cols.reshape(n, g, og * kh * kw, h * w))
    return gx.reshape(n, c, h, w)


def _weight_grad(xp: Any, g4: Any, cols4: Any) -> Any:
    """``sum_n g4[n] @ cols4[n]^T``: (N, g, O/g, L) x (N, g, Ck/g, L) -> (g, O/g, Ck/g)."""
    n = g4.shape[0]
    # Batched GEMM over samples, then a reduction over the batch. The per-sample products are
    # small (O x Ck); chunking bounds the temporary when O*Ck is comparable to Ck*L.
    per = g4.shape[1] * g4.shape[2] * cols4.shape[2]
    chunk = max(1, min(n, (1 << 22) // max(per, 1)))
    acc = xp.zeros((g4.shape[1], g4.shape[2], cols4.shape[2]), dtype=g4.dtype)  # N=0: zeros
    for s in range(0, n, chunk):
        acc += xp.matmul(g4[s : s + chunk], cols4[s : s + chunk].transpose(0, 1, 3, 2)).sum(0)
    return acc
