"""CUDA convolution: our im2col/col2im kernels in the batch-in-columns layout + cuBLAS GEMMs.

``cols2 (C*kh*kw, N*L)`` (``im2col_cn``) makes every GEMM a plain 2-D product per group on row
slices: cuBLAS honours CuPy's TF32 compute type only for 2-D GEMMs (batched ``matmul`` ignores
it and copies transposed operands), and the transposes of ``dW = dy2 @ cols2^T`` and
``dcols2 = W2^T @ dy2`` are views handed to cuBLAS as flags. Forward: ``Y2 (O, N*L)``, one
transposing copy to NCHW, ``bias_add_nchw``. Backward: ``dy`` copied once to ``(O, N*L)``,
``col2im_cn`` (a gather) for ``dx``, or the stride-1 correlation of ``dy`` with the flipped
kernel where :func:`gpucnn.backend.geometry.input_grad_path` says so.

The ``"igemm"`` algorithm runs our implicit-GEMM kernels instead (``cuda/conv_igemm.cu``,
:mod:`gpucnn.backend.cuda_ops.conv_igemm`): no column matrix, no cuBLAS, the bias fused into
the forward epilogue. Which algorithm runs: the ``algorithm`` argument, else
:func:`set_conv_algorithm`, else ``$GPUCNN_CUDA_CONV_ALGO``, else :func:`conv2d_algorithm`'s
rule (today always ``"im2col_gemm"``).
Primitives as :mod:`gpucnn.backend.numpy_ops.conv` (same names and signatures).
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

from gpucnn.backend import geometry
from gpucnn.backend.cuda_ops.bias import bias_add_nchw
from gpucnn.backend.cuda_ops.conv_igemm import (
    conv2d_igemm_backward_data,
    conv2d_igemm_backward_weight,
    conv2d_igemm_forward,
)
from gpucnn.backend.cuda_ops.im2col import col2im_cn, im2col_cn
from gpucnn.backend.geometry import Conv2dGeometry, ConvSaved
from gpucnn.backend.runtime import current_runtime, own_kernels_active

__all__ = [
    "conv2d_algorithm",
    "conv2d_forward",
    "conv2d_forward_act",
    "conv2d_backward",
    "conv2d_backward_data",
    "conv2d_backward_weight",
]

# The CUDA algorithms: im2col + cuBLAS GEMMs, and our implicit-GEMM kernels.
ALGORITHMS = ("im2col_gemm", "igemm")

#: The environment variable naming the default algorithm (one of :data:`ALGORITHMS`).
ALGORITHM_ENV = "GPUCNN_CUDA_CONV_ALGO"

_chosen: str | None = None  # set_conv_algorithm's choice (None: the env var, then the rule)


def _valid(name: str, where: str) -> str:
    if name not in ALGORITHMS:
        raise ValueError(f"conv2d: {where} must be one of {ALGORITHMS}, got {name!r}")
    return name


def set_conv_algorithm(name: str | None) -> None:
    """Make ``name`` (one of :data:`ALGORITHMS`) the algorithm of every CUDA convolution that
    does not name one; ``None`` goes back to ``$GPUCNN_CUDA_CONV_ALGO`` and the rule."""
    global _chosen
    _chosen = None if name is None else _valid(name, "set_conv_algorithm's name")


def get_conv_algorithm() -> str | None:
    """The algorithm :func:`set_conv_algorithm` or ``$GPUCNN_CUDA_CONV_ALGO`` fixes, or
    ``None`` (the rule decides per geometry)."""
    if _chosen is not None:
        return _chosen
    env = os.environ.get(ALGORITHM_ENV, "").strip()
    return _valid(env, f"${ALGORITHM_ENV}") if env else None


def _ns() -> Any:
    return SimpleNamespace(xp=current_runtime().xp, im2col_cn=im2col_cn, col2im_cn=col2im_cn)


def conv2d_algorithm(geom: Conv2dGeometry) -> str:
    """The algorithm :func:`conv2d_forward` runs ``geom`` with (one of :data:`ALGORITHMS`):
    ``"igemm"`` under :func:`gpucnn.backend.runtime.own_kernels` (graph capture), else
    :func:`get_conv_algorithm` when set, else the rule.

    The rule keeps ``"im2col_gemm"`` for every geometry: the FP32 SIMT implicit-GEMM kernels
    have not been measured against cuBLAS on a GPU yet. A per-geometry rule belongs here once
    ``python -m benchmarks.run --only conv`` (the ``conv2d_igemm_*`` cases beside the im2col
    ones, ``benchmarks/cases.py``) has numbers, with them in a comment next to its constants.
    """
    if own_kernels_active():  # a CUDA-graph capture, or eager code asking for our kernels
        return "igemm"
    chosen = get_conv_algorithm()
    return chosen if chosen is not None else "im2col_gemm"


def workspace_needed(geom: Conv2dGeometry, itemsize: int, algorithm: str = "im2col_gemm") -> int:
    """Bytes of scratch ``algorithm``'s forward needs: for ``"im2col_gemm"`` the whole column
    matrix ``cols2`` (none for a 1x1 stride-1 unpadded convolution of one sample, whose columns
    are ``x`` itself); none for ``"igemm"``."""
    if algorithm == "igemm" or (geom.pointwise and geom.n == 1):
        return 0
    return geom.c * geom.kh * geom.kw * geom.n * geom.oh * geom.ow * int(itemsize)


def conv2d_forward(
    x: Any,
    weight: Any,
    bias: Any,
    geom: Conv2dGeometry,
    need_dx: bool = True,
    need_dw: bool = True,
    algorithm: str | None = None,
    workspace_bytes: int | None = None,
    precision: str | None = None,
) -> tuple[Any, ConvSaved]:
    """``(y (N, O, oh, ow), saved)``; ``saved`` keeps ``cols2`` if ``need_dw``, ``W`` if
    ``need_dx`` (what :func:`conv2d_backward` needs).

    ``precision`` ``"fp16"`` / ``"bf16"`` (autocast): float32 ``x``, ``weight`` (and the
    backward's ``dy``) already hold values of that format; they go to the tensor-core
    implicit-GEMM kernels as 16-bit patterns (an exact conversion), FP32 accumulation, float32
    ``y``; forward and backward run ``conv_igemm_tc_*``, whatever ``algorithm`` says.

    ``algorithm``: one of :data:`ALGORITHMS` or ``None``. ``workspace_bytes``: a limit on the
    scratch the algorithm may use (``None``: no limit); ``"im2col_gemm"`` builds the whole
    column matrix (:func:`workspace_needed`), so a smaller limit raises ``ValueError``;
    ``"igemm"`` needs none (its weight-gradient split-K partial sums are bounded on their own).
    """
    be = _ns()
    if precision is not None:
        return _forward_low(be.xp, x, weight, bias, geom, need_dx, need_dw, precision)
    algo = conv2d_algorithm(geom) if algorithm is None else algorithm
    if algo not in ALGORITHMS:
        raise ValueError(
            f"conv2d: algorithm must be one of {ALGORITHMS} or None on CUDA, got {algorithm!r}"
        )
    if workspace_bytes is not None:
        need = workspace_needed(geom, x.dtype.itemsize, algo)
        if workspace_bytes < need:
            raise ValueError(
                f"conv2d: algorithm {algo!r} needs {need} bytes of workspace for input "
                f"{(geom.n, geom.c, geom.h, geom.w)}, weight {(geom.o, geom.cg, geom.kh, geom.kw)}"
                f"; workspace_bytes={workspace_bytes} given"
            )
    x, weight = be.xp.ascontiguousarray(x), be.xp.ascontiguousarray(weight)
    if algo == "igemm":  # the bias is added in the kernel's epilogue; dW needs x itself
        y = conv2d_igemm_forward(x, weight, bias, geom)
        return y, ConvSaved("igemm", x if need_dw else None, weight if need_dx else None)
    y, cols = _forward(be, x, weight, geom)
    if bias is not None:
        bias_add_nchw(y, bias)
    return y, ConvSaved("im2col_gemm", cols if need_dw else None, weight if need_dx else None)


def conv2d_forward_act(
    x: Any,
    weight: Any,
    bias: Any,
    geom: Conv2dGeometry,
    kind: str,
    param: float = 0.0,
    need_dx: bool = True,
    need_dw: bool = True,
) -> tuple[Any, Any, ConvSaved]:
    """``(y, act_saved, saved)``: ``y = act(conv(x, weight) + bias)`` (see the NumPy twin).
    With the ``"igemm"`` algorithm bias and activation are applied in the kernel's epilogue
    (``conv_igemm_fwd`` with ``act``), writing the pre-activation too only when the backward
    needs it (gelu); with ``"im2col_gemm"`` the activation kernel follows the convolution."""
    from gpucnn.backend.checks import check_fused_activation
    from gpucnn.backend.cuda_ops.activation import activation_forward

    needs_pre = check_fused_activation("conv2d_forward_act", kind, param)
    if conv2d_algorithm(geom) != "igemm":
        pre, saved = conv2d_forward(x, weight, bias, geom, need_dx, need_dw)
        y = activation_forward(pre, kind, param)
        return y, (pre if needs_pre else y), saved
    xp = current_runtime().xp
    x, weight = xp.ascontiguousarray(x), xp.ascontiguousarray(weight)
    out = conv2d_igemm_forward(x, weight, bias, geom, activation=kind, slope=float(param),
                               return_preactivation=needs_pre)  # fmt: skip
    y, pre = out if needs_pre else (out, out)
    return y, pre, ConvSaved("igemm", x if need_dw else None, weight if need_dx else None)


_LOW_ALGORITHMS = {"igemm_fp16": "fp16", "igemm_bf16": "bf16"}  # ConvSaved.algorithm -> precision


def _to_low(xp: Any, a: Any, precision: str) -> Any:
    """float32 ``a`` holding fp16/bf16 values as the kernels' 16-bit operand (exact)."""
    a = xp.ascontiguousarray(a, dtype=xp.float32)
    if precision == "fp16":
        return a.astype(xp.float16)
    u = a.view(xp.uint32)  # bf16: the high half of the bits, rounded to nearest even (exact
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(xp.uint16)  # for bf16 values)


def _forward_low(xp: Any, x: Any, weight: Any, bias: Any, geom: Conv2dGeometry, need_dx: bool,
                 need_dw: bool, precision: str) -> tuple[Any, ConvSaved]:  # fmt: skip
    if precision not in ("fp16", "bf16"):
        raise ValueError(
            f"conv2d: precision must be None, 'fp16' or 'bf16' on CUDA, got {precision!r}"
        )
    x16, w16 = _to_low(xp, x, precision), _to_low(xp, weight, precision)
    y = conv2d_igemm_forward(x16, w16, bias, geom, precision=precision)
    saved = ConvSaved(f"igemm_{precision}", x16 if need_dw else None, w16 if need_dx else None)
    return y, saved


def conv2d_backward(
    dy: Any,
    geom: Conv2dGeometry,
    saved: ConvSaved,
    need_dx: bool,
    need_dw: bool,
    input_grad: str | None = None,
) -> tuple[Any, Any]:
    """``(dx, dW)`` (``None`` where not needed) from what :func:`conv2d_forward` saved;
    ``input_grad``: how ``dx`` is computed (:func:`gpucnn.backend.geometry.input_grad_path`);
    after an ``"igemm"`` forward, ``None`` runs the implicit-GEMM backward-data kernel and a
    named path runs that im2col + cuBLAS path.
    """
    be = _ns()
    dy = be.xp.ascontiguousarray(dy)
    if saved.algorithm in _LOW_ALGORITHMS:  # tensor cores on 16-bit operands (autocast)
        p = _LOW_ALGORITHMS[saved.algorithm]
        g16 = _to_low(be.xp, dy, p)
        gx = conv2d_igemm_backward_data(g16, saved.weight, geom, precision=p) if need_dx else None
        gw = conv2d_igemm_backward_weight(g16, saved.data, geom, precision=p) if need_dw else None
        return gx, gw
    if saved.algorithm == "igemm":
        return _igemm_backward(be, dy, saved.data, saved.weight, geom, need_dx, need_dw,
                               input_grad)  # fmt: skip
    return _backward(be, dy, saved.data, saved.weight, geom, need_dx, need_dw, input_grad)


def conv2d_backward_data(
    dy: Any, weight: Any, geom: Conv2dGeometry, input_grad: str | None = None
) -> Any:
    """``dx (N, C, H, W)`` of the convolution ``geom`` from ``dy`` and ``weight`` (by the
    implicit-GEMM kernel when :func:`conv2d_algorithm` says ``"igemm"`` and ``input_grad`` is
    ``None``)."""
    be = _ns()
    dy, weight = be.xp.ascontiguousarray(dy), be.xp.ascontiguousarray(weight)
    if conv2d_algorithm(geom) == "igemm":
        return _igemm_backward(be, dy, None, weight, geom, True, False, input_grad)[0]
    return _backward(be, dy, None, weight, geom, True, False, input_grad)[0]


def conv2d_backward_weight(dy: Any, x: Any, geom: Conv2dGeometry) -> Any:
    """``dW (O, C/groups, kh, kw)`` of the convolution ``geom`` from ``dy`` and its input
    (by the implicit-GEMM kernel when :func:`conv2d_algorithm` says ``"igemm"``)."""
    be = _ns()
    if conv2d_algorithm(geom) == "igemm":
        return conv2d_igemm_backward_weight(be.xp.ascontiguousarray(dy), x, geom)
    cols = _columns(be, be.xp.ascontiguousarray(x), geom)
    return _backward(be, be.xp.ascontiguousarray(dy), cols, None, geom, False, True)[1]


def _igemm_backward(
    be: Any,
    gy: Any,
    x: Any,
    weight: Any,
    geom: Conv2dGeometry,
    need_x: bool,
    need_w: bool,
    input_grad: str | None,
) -> tuple[Any, Any]:
    """``(dx, dW)`` of the ``"igemm"`` algorithm from ``x`` (for ``dW``) and ``weight`` (for
    ``dx``): our kernels, or for ``dx`` the im2col path ``input_grad`` names."""
    gx = gw = None
    if need_x and input_grad is None:
        gx = conv2d_igemm_backward_data(gy, weight, geom)
    elif need_x:
        gx = _backward(be, gy, None, weight, geom, True, False, input_grad)[0]
    if need_w:
        gw = conv2d_igemm_backward_weight(gy, x, geom)
    return gx, gw


def _columns(be: Any, x: Any, geom: Conv2dGeometry) -> Any:
    """``cols2 (C*kh*kw, N*L)`` of ``x`` (``x`` itself for a 1x1 stride-1 unpadded conv of one
    sample)."""
    if geom.pointwise and geom.n == 1:
        return x.reshape(geom.c, geom.h * geom.w)  # a view: already batch-in-columns
    return be.im2col_cn(x, *geom.window)


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


def _forward(be: Any, x: Any, weight: Any, geom: Conv2dGeometry) -> tuple[Any, Any]:
    """CUDA forward without bias: ``(y (N, O, oh, ow), cols2 (C*kh*kw, N*oh*ow))``.

    ``cols2`` is the batch-in-columns im2col (``be.im2col_cn``; a 1x1 stride-1 unpadded conv of
    one sample uses ``x`` itself), ``Y2 (O, N*L) = W2 (O/g, Ck/g) @ cols2[group rows]`` per
    group (2-D GEMMs), then one transposing copy into NCHW.
    """
    n, o, g, oh, ow = geom.n, geom.o, geom.groups, geom.oh, geom.ow
    xp = be.xp
    cols = _columns(be, x, geom)  # (C*kh*kw, N*L)
    y2 = _grouped_gemm(xp, g, weight.reshape(o, geom.cg * geom.kh * geom.kw), cols)  # (O, N*L)
    y = xp.ascontiguousarray(y2.reshape(o, n, oh * ow).transpose(1, 0, 2))
    return y.reshape(n, o, oh, ow), cols


def _backward(
    be: Any,
    gy: Any,
    cols: Any,
    weight: Any,
    geom: Conv2dGeometry,
    need_x: bool,
    need_w: bool,
    input_grad: str | None = None,
) -> tuple[Any, Any]:
    """CUDA ``(dx, dW)`` from the saved ``cols2 (C*kh*kw, N*L)``, every GEMM 2-D.

    ``dy`` is transposed once to ``dy2 (O, N*L)``; per group ``dW = dy2 @ cols2^T`` and
    ``dcols2 = W2^T @ dy2`` with the transposes as views (no copy of ``cols2``), then
    ``col2im_cn`` (a gather) for ``dx``; or, where
    :func:`gpucnn.backend.geometry.input_grad_path` says so, ``dx`` as the stride-1
    correlation of ``dy`` with the flipped kernel
    (:func:`_input_grad_as_conv`).
    """
    n, c, h, w, o, cg = geom.n, geom.c, geom.h, geom.w, geom.o, geom.cg
    kh, kw, g, oh, ow = geom.kh, geom.kw, geom.groups, geom.oh, geom.ow
    xp = be.xp
    ckg, L = cg * kh * kw, oh * ow
    gx = gw = None
    if not (need_x or need_w):
        return gx, gw
    transposed = need_x and geometry.input_grad_path(geom, input_grad) == "transposed"
    if need_w or (need_x and not transposed):
        dy2 = xp.ascontiguousarray(gy.reshape(n, o, L).transpose(1, 0, 2)).reshape(o, n * L)
    if need_w:
        gw = _grouped_gemm(xp, g, dy2, cols, tb=True).reshape(o, cg, kh, kw)  # (O, Ck/g)
    if transposed:
        gx = _input_grad_as_conv(be, gy, weight, geom)
    elif need_x:
        dcols = _grouped_gemm(xp, g, weight.reshape(o, ckg), dy2, ta=True)  # (C*kh*kw, N*L)
        if geom.pointwise and n == 1:
            gx = dcols.reshape(1, c, h, w)
        else:
            gx = be.col2im_cn(dcols, n, c, h, w, *geom.window)
    return gx, gw


def _input_grad_as_conv(be: Any, gy: Any, weight: Any, geom: Conv2dGeometry) -> Any:
    """CUDA ``dx`` of a stride-1 convolution as the reference route's ``_input_grad_as_conv``
    does it, in 2-D: ``im2col_cn`` of ``dy`` for the convolution
    :meth:`~gpucnn.backend.geometry.Conv2dGeometry.input_grad_as_conv`, per group
    ``(C/g, O/g*k) @ (O/g*k, N*H*W)``, then one transposing copy into NCHW."""
    n, c, h, w, o, cg = geom.n, geom.c, geom.h, geom.w, geom.o, geom.cg
    kh, kw, g = geom.kh, geom.kw, geom.groups
    xp = be.xp
    og = o // g
    cols = be.im2col_cn(gy, *geom.input_grad_as_conv().window)
    # flipped kernel, row c, column (o*kh + i)*kw + j within its group (W is small: one copy)
    wf = weight.reshape(g, og, cg, kh, kw)[:, :, :, ::-1, ::-1].transpose(0, 2, 1, 3, 4)
    wf = xp.ascontiguousarray(wf).reshape(c, og * kh * kw)
    gx2 = _grouped_gemm(xp, g, wf, cols)  # (C, N*H*W)
    gx = xp.ascontiguousarray(gx2.reshape(c, n, h * w).transpose(1, 0, 2))
    return gx.reshape(n, c, h, w)
