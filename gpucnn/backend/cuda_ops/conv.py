"""CUDA convolution: our im2col/col2im kernels in the batch-in-columns layout + cuBLAS GEMMs.

``cols2 (C*kh*kw, N*L)`` (``im2col_cn``) makes every GEMM a plain 2-D product per group on row
slices: cuBLAS honours CuPy's TF32 compute type only for 2-D GEMMs (batched ``matmul`` ignores
it and copies transposed operands), and the transposes of ``dW = dy2 @ cols2^T`` and
``dcols2 = W2^T @ dy2`` are views handed to cuBLAS as flags. Forward: ``Y2 (O, N*L)``, one
transposing copy to NCHW, ``bias_add_nchw``. Backward: ``dy`` copied once to ``(O, N*L)``,
``col2im_cn`` (a gather) for ``dx``, or the stride-1 correlation of ``dy`` with the flipped
kernel where :func:`gpucnn.backend.geometry.use_transposed_path` says so.
Primitives as :mod:`gpucnn.backend.numpy_ops.conv` (same names and signatures).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from gpucnn.backend import geometry
from gpucnn.backend.cuda_ops.bias import bias_add_nchw
from gpucnn.backend.cuda_ops.im2col import col2im_cn, im2col_cn
from gpucnn.backend.geometry import Conv2dGeometry, ConvSaved
from gpucnn.backend.runtime import current_runtime

__all__ = ["conv2d_forward", "conv2d_backward", "conv2d_backward_data", "conv2d_backward_weight"]


def _ns() -> Any:
    return SimpleNamespace(xp=current_runtime().xp, im2col_cn=im2col_cn, col2im_cn=col2im_cn)


def conv2d_forward(
    x: Any, weight: Any, bias: Any, geom: Conv2dGeometry, need_dx: bool = True,
    need_dw: bool = True,
) -> tuple[Any, ConvSaved]:
    """``(y (N, O, oh, ow), saved)``; ``saved`` keeps ``cols2`` if ``need_dw``, ``W`` if
    ``need_dx`` (what :func:`conv2d_backward` needs)."""
    be = _ns()
    x, weight = be.xp.ascontiguousarray(x), be.xp.ascontiguousarray(weight)
    y, cols = _cuda_forward(be, x, weight, geom.as_tuple())
    if bias is not None:
        bias_add_nchw(y, bias)
    return y, ConvSaved("cuda", cols if need_dw else None, weight if need_dx else None)


def conv2d_backward(
    dy: Any, geom: Conv2dGeometry, saved: ConvSaved, need_dx: bool, need_dw: bool
) -> tuple[Any, Any]:
    """``(dx, dW)`` (``None`` where not needed) from what :func:`conv2d_forward` saved."""
    be = _ns()
    dy = be.xp.ascontiguousarray(dy)
    return _cuda_backward(be, dy, saved.data, saved.weight, geom.as_tuple(), need_dx, need_dw)


def conv2d_backward_data(dy: Any, weight: Any, geom: Conv2dGeometry) -> Any:
    """``dx (N, C, H, W)`` of the convolution ``geom`` from ``dy`` and ``weight``."""
    be = _ns()
    dy, weight = be.xp.ascontiguousarray(dy), be.xp.ascontiguousarray(weight)
    return _cuda_backward(be, dy, None, weight, geom.as_tuple(), True, False)[0]


def conv2d_backward_weight(dy: Any, x: Any, geom: Conv2dGeometry) -> Any:
    """``dW (O, C/groups, kh, kw)`` of the convolution ``geom`` from ``dy`` and its input."""
    be = _ns()
    t = geom.as_tuple()
    cols = _columns(be, be.xp.ascontiguousarray(x), t)
    return _cuda_backward(be, be.xp.ascontiguousarray(dy), cols, None, t, False, True)[1]


def _columns(be: Any, x: Any, geom: tuple) -> Any:
    """``cols2 (C*kh*kw, N*L)`` of ``x`` (``x`` itself for a 1x1 stride-1 unpadded conv of one
    sample)."""
    n, c, h, w, o, cg, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, g, pointwise = geom
    if pointwise and n == 1:
        return x.reshape(c, h * w)  # a view: (C, 1*H*W) is already batch-in-columns
    return be.im2col_cn(x, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow)


def _grouped_gemm(xp: Any, g: int, a: Any, b: Any, ta: bool = False, tb: bool = False) -> Any:
    """Block-diagonal product as ``g`` 2-D GEMMs: ``out[k-th row block] = op(a_k) @ op(b_k)``.

    ``a_k``/``b_k`` are the ``k``-th of ``g`` equal row blocks of the 2-D ``a``/``b`` (contiguous
    slices of C-contiguous arrays); ``op`` is a transposed *view* where ``ta``/``tb`` ask for it.
    Every operand is C- or F-contiguous and 2-D, so CuPy hands it to cuBLAS with a transpose
    flag and no copy, through the 2-D GEMM that honours the TF32 compute type
    (:func:`gpucnn.backend.set_tf32`); batched ``matmul`` (ndim > 2) would ignore it and copy
    transposed operands.
    """
    ra, rb = a.shape[0] // g, b.shape[0] // g

    def block(m: Any, rows: int, k: int, t: bool) -> Any:
        v = m if g == 1 else m[k * rows : (k + 1) * rows]
        return v.T if t else v

    if g == 1:
        return xp.matmul(block(a, ra, 0, ta), block(b, rb, 0, tb))
    a0, b0 = block(a, ra, 0, ta), block(b, rb, 0, tb)
    rows = a0.shape[0]
    out = xp.empty((g * rows, b0.shape[1]), dtype=a.dtype)
    for k in range(g):
        xp.matmul(block(a, ra, k, ta), block(b, rb, k, tb), out=out[k * rows : (k + 1) * rows])
    return out


def _cuda_forward(be: Any, x: Any, weight: Any, geom: tuple) -> tuple[Any, Any]:
    """CUDA forward without bias: ``(y (N, O, oh, ow), cols2 (C*kh*kw, N*oh*ow))``.

    ``cols2`` is the batch-in-columns im2col (``be.im2col_cn``; a 1x1 stride-1 unpadded conv of
    one sample uses ``x`` itself), ``Y2 (O, N*L) = W2 (O/g, Ck/g) @ cols2[group rows]`` per
    group (2-D GEMMs), then one transposing copy into NCHW.
    """
    n, c, h, w, o, cg, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, g, pointwise = geom
    xp = be.xp
    cols = _columns(be, x, geom)  # (C*kh*kw, N*L)
    y2 = _grouped_gemm(xp, g, weight.reshape(o, cg * kh * kw), cols)  # (O, N*L)
    y = xp.ascontiguousarray(y2.reshape(o, n, oh * ow).transpose(1, 0, 2))
    return y.reshape(n, o, oh, ow), cols


def _cuda_backward(
    be: Any, gy: Any, cols: Any, weight: Any, geom: tuple, need_x: bool, need_w: bool
) -> tuple[Any, Any]:
    """CUDA ``(dx, dW)`` from the saved ``cols2 (C*kh*kw, N*L)``, every GEMM 2-D.

    ``dy`` is transposed once to ``dy2 (O, N*L)``; per group ``dW = dy2 @ cols2^T`` and
    ``dcols2 = W2^T @ dy2`` with the transposes as views (no copy of ``cols2``), then
    ``col2im_cn`` (a gather) for ``dx``; or, where
    :func:`gpucnn.backend.geometry.use_transposed_path` says so, ``dx`` as the stride-1
    correlation of ``dy`` with the flipped kernel
    (:func:`_cuda_input_grad_as_conv`).
    """
    n, c, h, w, o, cg, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, g, pointwise = geom
    xp = be.xp
    ckg, L = cg * kh * kw, oh * ow
    gx = gw = None
    if not (need_x or need_w):
        return gx, gw
    transposed = need_x and geometry.use_transposed_path(geom)
    if need_w or (need_x and not transposed):
        dy2 = xp.ascontiguousarray(gy.reshape(n, o, L).transpose(1, 0, 2)).reshape(o, n * L)
    if need_w:
        gw = _grouped_gemm(xp, g, dy2, cols, tb=True).reshape(o, cg, kh, kw)  # (O, Ck/g)
    if transposed:
        gx = _cuda_input_grad_as_conv(be, gy, weight, geom)
    elif need_x:
        dcols = _grouped_gemm(xp, g, weight.reshape(o, ckg), dy2, ta=True)  # (C*kh*kw, N*L)
        if pointwise and n == 1:
            gx = dcols.reshape(1, c, h, w)
        else:
            gx = be.col2im_cn(dcols, n, c, h, w, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow)
    return gx, gw


def _cuda_input_grad_as_conv(be: Any, gy: Any, weight: Any, geom: tuple) -> Any:
    """CUDA ``dx`` of a stride-1 convolution as the reference route's ``_input_grad_as_conv``
    does it, in 2-D:
    ``im2col_cn`` of ``dy`` with the flipped kernel's pads, per group ``(C/g, O/g*k) @
    (O/g*k, N*H*W)``, then one transposing copy into NCHW."""
    n, c, h, w, o, cg, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, g, pointwise = geom
    xp = be.xp
    og = o // g
    cols = be.im2col_cn(gy, kh, kw, 1, 1, dh * (kh - 1) - pt, dw * (kw - 1) - pl, dh, dw, h, w)
    # flipped kernel, row c, column (o*kh + i)*kw + j within its group (W is small: one copy)
    wf = weight.reshape(g, og, cg, kh, kw)[:, :, :, ::-1, ::-1].transpose(0, 2, 1, 3, 4)
    wf = xp.ascontiguousarray(wf).reshape(c, og * kh * kw)
    gx2 = _grouped_gemm(xp, g, wf, cols)  # (C, N*H*W)
    gx = xp.ascontiguousarray(gx2.reshape(c, n, h * w).transpose(1, 0, 2))
    return gx.reshape(n, c, h, w)
