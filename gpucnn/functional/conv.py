"""2-D convolution (PyTorch semantics, NCHW): im2col + GEMM forward, GEMMs + col2im backward.

Shapes: input ``x`` (N, C, H, W); weight (O, C/groups, kh, kw); bias (O,); output
(N, O, OH, OW); ``L = OH*OW``. The column buffers' row index is ``(c*kh + i)*kw + j``, so the
rows of group ``g`` are one contiguous block (of the columns, of ``W`` reshaped to
(O, C/g*kh*kw), of ``dy`` as (O, ...)).

On the CUDA backend every GEMM is a 2-D ``xp.matmul`` (one per group, on contiguous row
slices): CuPy sends 2-D products to cuBLAS with the float32 compute type of
:func:`gpucnn.backend.set_tf32` (TF32) and passes a transposed 2-D view as a transpose flag,
without copying it, while batched ``matmul`` (ndim > 2) ignores the compute type and copies
transposed operands. The backend's ``im2col_cn`` gives batch-in-columns ``cols2``
(C*kh*kw, N*L), column ``n*L + l``:

* forward: ``Y2 (O, N*L) = W2 (O/g, C/g*k) @ cols2[group rows]`` per group, one transposing
  copy to NCHW, then ``bias_add_nchw``;
* backward: ``dy`` copied once to ``dy2 (O, N*L)``; ``dW = dy2 @ cols2^T`` and
  ``dcols2 = W2^T @ dy2`` per group (the transposes are views), ``col2im_cn`` (a gather) for
  ``dx``; ``db = bias_grad_nchw(dy)``. Stride-1 convolutions where
  :func:`_use_transposed_path` says so take ``dx`` as the correlation of ``dy`` with the
  flipped kernel instead (``im2col_cn`` of ``dy``, 2-D GEMMs, one copy to NCHW).

A 1x1 stride-1 unpadded convolution of one sample uses ``x`` itself as ``cols2`` (C, H*W);
other 1x1 ones go through ``im2col_cn`` (a transpose). Asymmetric padding (``padding="same"``
with an even kernel) is expressed through the output size handed to the im2col kernels: the
top/left pads are passed, the extra bottom/right rows are the reads past the end that they
zero-fill. The forward pass keeps ``cols2`` for the weight gradient (no second im2col in
backward); it is freed with the graph.

The NumPy backend's generic route (1x1 convolutions, and the fallback of the rules below) uses
per-sample ``cols`` (N, C*kh*kw, L) from ``im2col`` and batched ``xp.matmul`` that writes NCHW
directly: ``y[n] = W @ cols[n]`` per group, ``dcols[n] = W^T @ dy[n]`` then ``col2im``,
``dW = sum_n dy[n] @ cols[n]^T``; a plain 1x1 convolution skips im2col (``x`` viewed as
(N, C, H*W)).

On the NumPy backend the same algorithm runs on the "wide" (frame) layout of
:func:`gpucnn.backend.numpy_ops.im2col._wide_im2col`: columns ``(C*kh*kw, N*oh*Wq)`` built from
long contiguous runs, the batch folded into the GEMM's columns, garbage columns ``x >= ow``
dropped when ``y`` is written back as NCHW (and zero-filled in the wide ``dy``). It gives the
same results as the generic route (a test compares them over the option grid).

Small images (8- to 16-wide outputs) waste 10-30% of those GEMMs on garbage columns, so the
NumPy backend runs them in the batch-innermost layout of
:class:`gpucnn.backend.numpy_ops.im2col._BatchInnerGeometry` instead: ``x`` transposed once to
a padded ``(C, Hp, Wp, N)``, columns ``(C*kh*kw, oh*ow*N)`` with no garbage built per chunk of
output rows by one strided copy of runs of ``ow*N`` elements, ``y = W @ cols`` as
``(O, oh, ow, N)`` transposed back to NCHW with the bias fused; backward ``dW = dy @ cols^T``
(columns rebuilt per chunk), ``dx`` by the flipped-kernel correlation of ``dy`` in the same
layout or by ``W^T @ dy`` added back one kernel offset at a time. :func:`_numpy_route` picks the
route by the measured rule of :func:`_use_batch_inner_path`.

3x3 stride-1 convolutions with enough channels (ResNet's 32- and 64-channel stages) run as
Winograd F(2x2, 3x3) on the NumPy backend (:mod:`gpucnn.functional._winograd`, rule
:func:`_use_winograd`): 16 multiplies per 2x2 output tile and channel pair instead of 36, for
the forward, for ``dx`` (the correlation of the padded ``dy`` with the flipped kernel) and for
``dW`` (the transposed transform over the same tiles), all in a batch-innermost polyphase layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gpucnn.tensor import Context, Function, Tensor, is_grad_enabled

__all__ = ["conv2d", "conv2d_output_size", "same_padding", "Conv2dFunction"]

IntPair = int | Sequence[int]
Padding = int | str | Sequence[int]


def _pair(v: IntPair, name: str, op: str = "conv2d", minimum: int = 1) -> tuple[int, int]:
    """``v`` as ``(int, int)``; raises ``ValueError`` naming ``op`` and ``name``."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        p = (int(v), int(v))
    else:
        try:
            items = tuple(v)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {v!r}") from None
        if len(items) != 2 or not all(
            isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in items
        ):
            raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {v!r}")
        p = (int(items[0]), int(items[1]))
    if p[0] < minimum or p[1] < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {p}")
    return p


def same_padding(kernel: IntPair, dilation: IntPair = 1) -> tuple[int, int, int, int]:
    """Padding ``(top, bottom, left, right)`` of ``padding="same"`` (stride 1), as PyTorch.

    The total per axis is ``dilation*(k-1)``; top/left get ``total // 2`` and the extra one of
    an odd total (even kernels) goes to bottom/right.
    """
    kh, kw = _pair(kernel, "kernel_size")
    dh, dw = _pair(dilation, "dilation")
    th, tw = dh * (kh - 1), dw * (kw - 1)
    return th // 2, th - th // 2, tw // 2, tw - tw // 2


def _resolve_padding(
    padding: Padding, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]
) -> tuple[int, int, int, int]:
    """``padding`` (int, pair, 4-tuple, "valid" or "same") as ``(top, bottom, left, right)``."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return 0, 0, 0, 0
        if mode == "same":
            if stride != (1, 1):
                raise ValueError(
                    f"conv2d: padding='same' needs stride 1 (as in PyTorch), got stride {stride}"
                )
            return same_padding(kernel, dilation)
        raise ValueError(
            f"conv2d: padding must be an int, a pair, 'valid' or 'same', got {padding!r}"
        )
    if not isinstance(padding, (int, np.integer)):
        try:
            items = tuple(padding)
        except TypeError:
            raise TypeError(
                f"conv2d: padding must be an int, a pair, 'valid' or 'same', got {padding!r}"
            ) from None
        if len(items) == 4:
            vals = tuple(int(i) for i in items)
            if min(vals) < 0:
                raise ValueError(f"conv2d: padding must be >= 0, got {vals}")
            return vals  # type: ignore[return-value]
    ph, pw = _pair(padding, "padding", minimum=0)
    return ph, ph, pw, pw


def conv2d_output_size(
    h: int,
    w: int,
    kernel: IntPair,
    stride: IntPair = 1,
    padding: Padding = 0,
    dilation: IntPair = 1,
) -> tuple[int, int]:
    """Output ``(OH, OW)`` of a convolution of an ``h x w`` image (PyTorch formula).

    ``OH = (h + top + bottom - dilation*(kh-1) - 1) // stride + 1``; ``padding`` is an int, a
    pair, ``(top, bottom, left, right)``, ``"valid"`` or ``"same"``. The result may be < 1 for
    impossible configurations (callers validate).
    """
    k = _pair(kernel, "kernel_size")
    s = _pair(stride, "stride")
    d = _pair(dilation, "dilation")
    pt, pb, pl, pr = _resolve_padding(padding, k, s, d)
    oh = (int(h) + pt + pb - d[0] * (k[0] - 1) - 1) // s[0] + 1
    ow = (int(w) + pl + pr - d[1] * (k[1] - 1) - 1) // s[1] + 1
    return oh, ow


def _backend(a: Any) -> Any:
    from gpucnn.backend import backend_of

    return backend_of(a)


class Conv2dFunction(Function):
    """Autograd node of :func:`conv2d`: ``apply(x, weight[, bias], stride=, pads=, dilation=,
    groups=)`` with ``pads = (top, bottom, left, right)``; arguments are already validated."""

    @staticmethod
    def forward(
        ctx: Context,
        x: Any,
        weight: Any,
        bias: Any = None,
        *,
        stride: tuple[int, int],
        pads: tuple[int, int, int, int],
        dilation: tuple[int, int],
        groups: int,
    ) -> Any:
        be = _backend(x)
        xp = be.xp
        x = xp.ascontiguousarray(x)
        weight = xp.ascontiguousarray(weight)
        n, c, h, w = (int(s) for s in x.shape)
        o, cg, kh, kw = (int(s) for s in weight.shape)
        sh, sw = stride
        dh, dw = dilation
        pt, pb, pl, pr = pads
        oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
        ow = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
        g = groups
        og, ckg, L = o // g, cg * kh * kw, oh * ow
        pointwise = kh == 1 and kw == 1 and stride == (1, 1) and pads == (0, 0, 0, 0)
        route = "generic"
        if be.name == "numpy":
            route = _numpy_route(n, kw, sw, dw, ow, pointwise, kh, sh, dh, c, o, g)
            wino_ok = _winograd_applies(kh, kw, stride, dilation, g) and max(pt, pl) <= 2
            if route == "winograd" and not wino_ok:
                # a conv Winograd F(2x2, 3x3) cannot run (or top/left pads > 2, where dx, the
                # correlation of dy padded by 2 - pad, would need negative pads)
                route = "batch_inner"
        ctx.route = route
        if route in ("batch_inner", "winograd"):
            if route == "winograd":  # ``padded``: what dW needs of the input; ``geo`` a marker
                keep_w = is_grad_enabled() and len(ctx.needs_input_grad) > 1
                keep_w = keep_w and bool(ctx.needs_input_grad[1])
                y, padded = _winograd_forward(x, weight, bias, (pt, pl), oh, ow, keep_w)
                geo = "winograd"
            else:
                y, padded, geo = _batch_inner_forward(
                    x, weight, bias, stride, (pt, pl), dilation, g, oh, ow
                )
            ctx.geom = (n, c, h, w, o, cg, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, g, pointwise)
            ctx.frames_geometry = geo
            needs = ctx.needs_input_grad if is_grad_enabled() else ()
            ctx.has_bias = bias is not None
            ctx.save_for_backward(
                padded if len(needs) > 1 and needs[1] else None,
                weight if needs and needs[0] else None,
            )
            return y
        if route == "wide":
            y, frames, geo = _wide_forward(x, weight, bias, stride, (pt, pl), dilation, g, oh, ow)
            ctx.geom = (n, c, h, w, o, cg, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, g, pointwise)
            ctx.frames_geometry = geo
            needs = ctx.needs_input_grad if is_grad_enabled() else ()
            ctx.has_bias = bias is not None
            ctx.save_for_backward(
                frames if len(needs) > 1 and needs[1] else None,
                weight if needs and needs[0] else None,
            )
            return y
        ctx.frames_geometry = None
        if be.name != "numpy":  # CUDA: 2-D GEMMs on batch-in-columns columns
            ctx.route = "cuda"
            ctx.geom = (n, c, h, w, o, cg, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, g, pointwise)
            y, cols = _cuda_forward(be, x, weight, ctx.geom)
            if bias is not None:
                be.bias_add_nchw(y, bias)
            needs = ctx.needs_input_grad if is_grad_enabled() else ()
            ctx.has_bias = bias is not None
            ctx.save_for_backward(
                cols if len(needs) > 1 and needs[1] else None,
                weight if needs and needs[0] else None,
            )
            return y
        if pointwise:
            cols = x.reshape(n, c, h * w)  # a view: 1x1, stride 1, no padding needs no im2col
        else:
            cols = be.im2col(x, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow)  # (N, C*kh*kw, L)
        w2 = weight.reshape(g, og, ckg)
        if g == 1:
            y = xp.matmul(w2[0], cols)  # (O, Ck) @ (N, Ck, L) -> (N, O, L): NCHW already
        else:
            y = xp.matmul(w2, cols.reshape(n, g, ckg, L))  # (N, g, O/g, L)
        y = y.reshape(n, o, oh, ow)
        if bias is not None:
            be.bias_add_nchw(y, bias)
        ctx.geom = (n, c, h, w, o, cg, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, g, pointwise)
        needs = ctx.needs_input_grad if is_grad_enabled() else ()
        ctx.has_bias = bias is not None
        # cols only for the weight gradient; weight only for the input gradient.
        ctx.save_for_backward(
            cols if len(needs) > 1 and needs[1] else None,
            weight if needs and needs[0] else None,
        )
        return y

    @staticmethod
    def backward(ctx: Context, gy: Any) -> tuple:
        cols, weight = ctx.saved
        n, c, h, w, o, cg, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, g, pointwise = ctx.geom
        be = _backend(gy)
        xp = be.xp
        gy = xp.ascontiguousarray(gy)
        og, ckg, L = o // g, cg * kh * kw, oh * ow
        needs = ctx.needs_input_grad
        gx = gw = gb = None
        if ctx.frames_geometry is not None:  # NumPy fast paths: ``cols`` holds their input copy
            geo = ctx.frames_geometry
            if ctx.route == "wide":
                gx, gw = _wide_backward(gy, cols, geo, weight, ctx.geom, needs[0], needs[1])
            elif ctx.route == "winograd":
                gx, gw = _winograd_backward(gy, cols, weight, ctx.geom, needs[0], needs[1])
            else:
                gx, gw = _batch_inner_backward(gy, cols, geo, weight, ctx.geom, needs[0], needs[1])
            if ctx.has_bias:
                return gx, gw, be.bias_grad_nchw(gy) if needs[2] else None
            return gx, gw
        if ctx.route == "cuda":
            gx, gw = _cuda_backward(be, gy, cols, weight, ctx.geom, needs[0], needs[1])
            if ctx.has_bias:
                return gx, gw, be.bias_grad_nchw(gy) if needs[2] else None
            return gx, gw
        g4 = gy.reshape(n, g, og, L)
        if needs[0] and _use_transposed_path(ctx.geom):
            gx = _input_grad_as_conv(be, gy, weight, ctx.geom)
        elif needs[0]:
            w2t = weight.reshape(g, og, ckg).transpose(0, 2, 1)  # (g, Ck/g, O/g)
            if g == 1:
                dcols = xp.matmul(w2t[0], gy.reshape(n, o, L))  # (N, Ck, L)
            else:
                dcols = xp.matmul(w2t, g4).reshape(n, c * kh * kw, L)
            if pointwise:
                gx = dcols.reshape(n, c, h, w)
            else:
                gx = be.col2im(dcols, n, c, h, w, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow)
        if needs[1]:
            gw = _weight_grad(xp, g4, cols.reshape(n, g, ckg, L)).reshape(o, cg, kh, kw)
        if ctx.has_bias:
            gb = be.bias_grad_nchw(gy) if needs[2] else None
            return gx, gw, gb
        return gx, gw


def _numpy_route(
    n: int,
    kw: int,
    sw: int,
    dw: int,
    ow: int,
    pointwise: bool,
    kh: int = 0,
    sh: int = 0,
    dh: int = 0,
    c: int = 0,
    o: int = 0,
    groups: int = 0,
) -> str:
    """Which NumPy algorithm runs a convolution: ``"winograd"``, ``"batch_inner"``, ``"wide"``
    or ``"generic"``.

    A plain 1x1 convolution needs no im2col (generic route, ``x`` is its own columns). 3x3
    stride-1 convolutions with enough channels and tiles take Winograd F(2x2, 3x3)
    (:func:`_use_winograd`; needs the trailing arguments, left at 0 it never applies). Small
    images take the batch-innermost route (:func:`_use_batch_inner_path`), other ones the
    frame route unless its garbage columns would dominate (:func:`_use_wide_path`).
    """
    if pointwise:
        return "generic"
    if _use_winograd(n, kh, kw, sh, sw, dh, dw, c, o, groups, ow):
        return "winograd"
    if _use_batch_inner_path(n, kw, sw, dw, ow):
        return "batch_inner"
    if _use_wide_path(kw, sw, dw, ow):
        return "wide"
    return "generic"


def _winograd_applies(
    kh: int, kw: int, stride: tuple[int, int], dilation: tuple[int, int], groups: int
) -> bool:
    """Whether Winograd F(2x2, 3x3) computes this convolution at all: a 3x3 kernel, stride 1,
    dilation 1, one group (any padding)."""
    return (kh, kw) == (3, 3) and stride == (1, 1) and dilation == (1, 1) and groups == 1


def _use_winograd(
    n: int,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    dh: int,
    dw: int,
    c: int,
    o: int,
    groups: int,
    ow: int,
) -> bool:
    """Whether the NumPy backend runs this convolution (forward and ``dx``) as Winograd
    F(2x2, 3x3): it applies (:func:`_winograd_applies`) and it measured faster (the rule
    constants below)."""
    if not _winograd_applies(kh, kw, (sh, sw), (dh, dw), groups):
        return False
    if min(c, o) < _WINOGRAD_MIN_CHANNELS or ow < _WINOGRAD_MIN_WIDTH:
        return False
    return n * ((ow + 1) // 2) >= _WINOGRAD_MIN_RUN


# Rule constants of :func:`_use_winograd`. The transforms cost a fixed number of NumPy passes
# per tile and channel while the GEMMs save 20 of 36 multiplies per tile and channel pair, so
# the channel count must be large enough for the saving to outweigh the transforms; the passes
# run over ``tw*N`` contiguous elements (``tw`` tiles per row) and the polyphase input carries
# one extra tile row and column, which dominates tiny images. Measured fwd+bwd, float32, one
# BLAS thread, time relative to PyTorch (winograd / batch_inner / wide), padding 1:
# 64->64 8x8 N=128: 1.33 / 1.78 / 2.10; 32->32 16x16 N=128: 1.55 / 1.77 / 1.66;
# 16->16 32x32 N=128: 1.98 / 2.07 / 1.80 (too few channels); 64->64 8x8 N=16 (runs of 64):
# 1.58 / 1.52; N=4: 2.0 / 0.85; 128->128 4x4 N=128 (2 tiles a row): 2.3 / 2.2.
_WINOGRAD_MIN_CHANNELS = 24
_WINOGRAD_MIN_WIDTH = 7
_WINOGRAD_MIN_RUN = 128


def _winograd_forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    pads: tuple[int, int],
    oh: int,
    ow: int,
    keep: bool = False,
) -> tuple[np.ndarray, Any]:
    """NumPy forward by Winograd F(2x2, 3x3): ``(y (N, O, oh, ow), saved)``.

    ``x`` is transposed once into the zero-padded, batch-innermost polyphase ``P4`` of
    :mod:`gpucnn.functional._winograd` and run through
    :func:`gpucnn.functional._winograd.conv3x3`; the ``(O, oh, ow, N)`` part of the tiles is
    transposed to NCHW with the bias added in the same pass. ``pads`` are the top/left pads.
    ``saved`` is what the weight gradient needs when ``keep`` (else None): the transformed
    input itself (a :class:`~gpucnn.functional._winograd.KeptInput`, the backward skips the
    input transform) up to :data:`~gpucnn.functional._winograd.KEEP_MAX_BYTES`, else ``P4``.
    """
    from gpucnn.backend.numpy_ops.im2col import _from_batch_inner
    from gpucnn.functional import _winograd as wg

    n, o, dt = x.shape[0], weight.shape[0], x.dtype
    th, tw = wg.tiles(oh), wg.tiles(ow)
    shape = (x.shape[1], 2, th + 1, 2, tw + 1, n)
    keep_v = keep and wg.KeptInput.nbytes(shape, dt.itemsize) <= wg.KEEP_MAX_BYTES
    p4 = wg.polyphase_nchw(x, pads[0], pads[1], th, tw, scratch=not (keep and not keep_v))
    yt, kept = wg.conv3x3(p4, wg.filter_transform(weight), keep=keep_v)
    y = np.empty((n, o, oh, ow), dtype=dt)
    add = None if bias is None else bias.astype(dt, copy=False).reshape(o, 1, 1)
    _from_batch_inner(yt[:, :oh, :ow], y, add=add)
    return y, (kept if keep_v else p4 if keep else None)


def _winograd_backward(
    gy: np.ndarray,
    p4: Any,
    weight: np.ndarray | None,
    geom: tuple,
    need_x: bool,
    need_w: bool,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """NumPy ``(dx, dW)`` of :func:`_winograd_forward`: ``dy`` transposed once to
    ``dyt (O, oh, ow, N)``; ``dW`` by the transposed Winograd transform over what the forward
    saved (its transformed input, or ``P4``: :func:`gpucnn.functional._winograd.weight_grad`),
    ``dx`` by Winograd on the padded ``dy`` with the flipped kernel
    (:func:`_winograd_input_grad`)."""
    from gpucnn.backend.numpy_ops.im2col import _from_batch_inner, _to_batch_inner
    from gpucnn.functional import _winograd as wg

    n, c, h, w, o, cg, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, g, _ = geom
    if not (need_x or need_w):
        return None, None
    # scratch (reused across calls: no page faults on fresh pages); it does not escape
    dyt = wg._buffer("dyt", o * oh * ow * n, gy.dtype).reshape(o, oh, ow, n)
    _to_batch_inner(gy, dyt)
    gw = wg.weight_grad(p4, dyt) if need_w else None
    gx = None
    if need_x:
        gx = np.empty((n, c, h, w), gy.dtype)
        _from_batch_inner(_winograd_input_grad(dyt, weight, geom), gx)
    return gx, gw


def _winograd_input_grad(dyt: np.ndarray, weight: np.ndarray, geom: tuple) -> np.ndarray:
    """``dx (C, H, W, N)`` of a stride-1 3x3 convolution from ``dyt (O, oh, ow, N)`` by
    Winograd: the correlation of ``dy`` padded by ``2 - pad`` (top/left; the pads must be
    <= 2) with the flipped, transposed kernel (see :func:`_batch_inner_transposed`)."""
    from gpucnn.functional import _winograd as wg

    n, c, h, w, o, cg, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, g, _ = geom
    p4 = wg.polyphase(dyt, 2 - pt, 2 - pl, wg.tiles(h), wg.tiles(w))
    return wg.conv3x3(p4, wg.flipped_filter_transform(weight))[0][:, :h, :w]


def _use_batch_inner_path(n: int, kw: int, sw: int, dw: int, ow: int) -> bool:
    """Whether the batch-innermost layout beats the frame layout (measured, see the module
    docstring): the frame layout wastes ``(Wq - ow) / Wq`` of every GEMM on garbage columns,
    the batch-innermost one pays four blocked transposes (x, y, dy, dx) instead."""
    wq = ow + ((kw - 1) * dw) // sw
    return n * ow >= _BATCH_INNER_MIN_RUN and (wq - ow) * _BATCH_INNER_JUNK_DEN >= wq


# Rule constants of :func:`_use_batch_inner_path`, measured with one BLAS thread on float32
# convs fwd+bwd (N=128 unless noted; ratio of the batch-innermost to the frame route's time):
# LeNet 6->16 14x14 k5 (garbage 29%) 0.8; 64->64 8x8 (20%) 0.9; 128->128 4x4 (33%) 0.7;
# 64->128 8x8 s2 (20%) 0.8; 32->32 16x16 and 32->64 16x16 s2 (11%) 0.9; LeNet 1->6 28x28 pad 2
# (12.5%) 0.5-0.8; 64->64 8x8 with N=4 (runs of 32) 0.8; but 16->16 32x32 and 16->32 32x32 s2
# (6%) 1.1. Hence: garbage of at least 1/_BATCH_INNER_JUNK_DEN of the frame row, and copy runs
# (``N*ow`` elements) of at least _BATCH_INNER_MIN_RUN.
_BATCH_INNER_MIN_RUN = 32
_BATCH_INNER_JUNK_DEN = 10


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
    transposed = need_x and _use_transposed_path(geom)
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


# Column bytes per chunk of output rows on the batch-innermost path (at least one row).
_BATCH_INNER_CHUNK_BYTES = 2 << 20


def _batch_inner_forward(
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
    """NumPy forward in the batch-innermost layout: ``(y (N, O, oh, ow), P, geometry)``.

    ``x`` is transposed once into the padded ``P (C, Hp, Wp, N)`` (kept for the weight
    gradient). Per chunk of output rows, the columns ``(C*kh*kw, rows*ow*N)`` (no garbage) go
    through one GEMM per group into ``yt (O, oh*ow*N)``; ``yt`` is transposed to NCHW with the
    bias added in the same pass. ``pads`` are the top/left pads.
    """
    from gpucnn.backend.numpy_ops.im2col import _BatchInnerGeometry, _from_batch_inner

    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    og, ckg, dt = o // g, cg * kh * kw, x.dtype
    geo = _BatchInnerGeometry(n, c, h, w, kh, kw, *stride, *pads, *dilation, oh, ow)
    padded = geo.to_padded(x)
    rows = _rows_per_chunk(geo, dt)
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


def _rows_per_chunk(geo: Any, dt: np.dtype) -> int:
    """Output rows per chunk of batch-innermost columns (at least 1, at most all)."""
    per_row = max(geo.row_size * np.dtype(dt).itemsize, 1)
    return max(1, min(geo.oh, _BATCH_INNER_CHUNK_BYTES // per_row))


def _batch_inner_backward(
    gy: np.ndarray,
    padded: np.ndarray | None,
    geo: Any,
    weight: np.ndarray | None,
    geom: tuple,
    need_x: bool,
    need_w: bool,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """NumPy ``(dx, dW)`` from :func:`_batch_inner_forward`'s saved ``P`` and geometry.

    ``dy`` is transposed once to ``dyt (O, oh*ow*N)``. Per chunk of output rows the columns
    are rebuilt from ``P`` for ``dW += dy_chunk @ cols^T`` (one GEMM, the batch in its inner
    dimension). ``dx`` is either the stride-1 correlation of the padded ``dyt`` with the
    flipped kernel (:func:`_use_transposed_path`; itself a batch-innermost forward, without
    leaving the layout) or ``W^T @ dy_chunk`` added into a padded ``dP (C, Hp, Wp, N)`` one
    kernel offset at a time; either ends with one transpose back to NCHW.
    """
    from gpucnn.backend.numpy_ops.im2col import _from_batch_inner, _to_batch_inner

    n, c, h, w, o, cg, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, g, _ = geom
    og, ckg, dt = o // g, cg * kh * kw, gy.dtype
    if not (need_x or need_w):
        return None, None
    from gpucnn.functional._winograd import _buffer

    # scratch (reused across calls: no page faults on fresh pages); neither escapes
    dyt = _buffer("dyt", o * oh * ow * n, dt).reshape(o, oh, ow, n)
    _to_batch_inner(gy, dyt)
    d3 = dyt.reshape(g, og, -1)
    transposed = need_x and _use_transposed_path(geom)
    scatter = need_x and not transposed
    rows = _rows_per_chunk(geo, dt)
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
        _from_batch_inner(_batch_inner_transposed(dyt, weight, geom), gx)
    return gx, (gw.reshape(o, cg, kh, kw) if need_w else None)


def _batch_inner_transposed(dyt: np.ndarray, weight: np.ndarray, geom: tuple) -> np.ndarray:
    """``dx (C, H, W, N)`` of a stride-1 convolution from ``dyt (O, oh, ow, N)``.

    ``dx[c, y, x] = sum_{o,i,j} W[o, c, i, j] dy[o, y + pt - i*dh, x + pl - j*dw]``: the
    correlation of ``dy`` padded by ``dilation*(k-1) - pad`` (top/left) with the flipped kernel
    ``W'[c, o, i, j] = W[o, c, kh-1-i, kw-1-j]`` (per group), output ``H x W``.
    """
    from gpucnn.backend.numpy_ops.im2col import _BatchInnerGeometry

    n, c, h, w, o, cg, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, g, _ = geom
    og, dt = o // g, dyt.dtype
    back = _BatchInnerGeometry(
        n, o, oh, ow, kh, kw, 1, 1, dh * (kh - 1) - pt, dw * (kw - 1) - pl, dh, dw, h, w
    )
    padded = back.pad_batch_inner(dyt)
    wf = weight.reshape(g, og, cg, kh, kw)[:, :, :, ::-1, ::-1].transpose(0, 2, 1, 3, 4)
    wf = np.ascontiguousarray(wf).reshape(g, cg, og * kh * kw)
    rows = _rows_per_chunk(back, dt)
    colbuf = np.empty(rows * back.row_size, dt)
    dxt = np.empty((g, cg, h * w * n), dt)
    step = w * n
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        cols = back.cols(padded, y0, y1, out=colbuf).reshape(g, og * kh * kw, -1)
        np.matmul(wf, cols, out=dxt[:, :, y0 * step : y1 * step])
    return dxt.reshape(c, h, w, n)


def _use_transposed_path(geom: tuple) -> bool:
    """Whether ``dx`` is cheaper as a stride-1 convolution of ``dy`` than as GEMM + col2im.

    For stride 1 the input gradient is the correlation of ``dy`` with the flipped, transposed
    kernel. That is one im2col of ``dy`` (N, O*k, H*W) and one GEMM, against a GEMM writing
    (N, C*k, OH*OW) plus the col2im scatter-add; it wins when O*H*W is not much larger than
    C*OH*OW (ResNet's "same" 3x3 convs) and needs the pads to fit inside the flipped kernel.
    """
    n, c, h, w, o, cg, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, g, pointwise = geom
    if pointwise or (sh, sw) != (1, 1):
        return False
    if pt > dh * (kh - 1) or pl > dw * (kw - 1):
        return False
    return o * h * w <= 1.25 * c * oh * ow


def _input_grad_as_conv(be: Any, gy: Any, weight: Any, geom: tuple) -> Any:
    """``dx`` of a stride-1 convolution: im2col of ``dy`` with the flipped kernel, then GEMM."""
    n, c, h, w, o, cg, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, g, pointwise = geom
    xp = be.xp
    og = o // g
    # dx[n, c, y, x] = sum_{o,i,j} W[o, c, i, j] dy[n, o, y + pt - i*dh, x + pl - j*dw]
    cols = be.im2col(gy, kh, kw, 1, 1, dh * (kh - 1) - pt, dw * (kw - 1) - pl, dh, dw, h, w)
    # flipped kernel per group: (g, C/g, O/g*kh*kw) with column index (o*kh + i)*kw + j
    wf = weight[:, :, ::-1, ::-1].reshape(g, og, cg, kh * kw).transpose(0, 2, 1, 3)
    wf = xp.ascontiguousarray(wf).reshape(g, cg, og * kh * kw)
    if g == 1:
        gx = xp.matmul(wf[0], cols)  # (C, O*k) @ (N, O*k, HW) -> (N, C, HW)
    else:
        gx = xp.matmul(wf, cols.reshape(n, g, og * kh * kw, h * w))
    return gx.reshape(n, c, h, w)


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
    if pointwise and n == 1:
        cols = x.reshape(c, h * w)  # a view: (C, 1*H*W) is already batch-in-columns
    else:
        cols = be.im2col_cn(x, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow)  # (C*kh*kw, N*L)
    y2 = _grouped_gemm(xp, g, weight.reshape(o, cg * kh * kw), cols)  # (O, N*L)
    y = xp.ascontiguousarray(y2.reshape(o, n, oh * ow).transpose(1, 0, 2))
    return y.reshape(n, o, oh, ow), cols


def _cuda_backward(
    be: Any, gy: Any, cols: Any, weight: Any, geom: tuple, need_x: bool, need_w: bool
) -> tuple[Any, Any]:
    """CUDA ``(dx, dW)`` from the saved ``cols2 (C*kh*kw, N*L)``, every GEMM 2-D.

    ``dy`` is transposed once to ``dy2 (O, N*L)``; per group ``dW = dy2 @ cols2^T`` and
    ``dcols2 = W2^T @ dy2`` with the transposes as views (no copy of ``cols2``), then
    ``col2im_cn`` (a gather) for ``dx``; or, where :func:`_use_transposed_path` says so, ``dx``
    as the stride-1 correlation of ``dy`` with the flipped kernel
    (:func:`_cuda_input_grad_as_conv`).
    """
    n, c, h, w, o, cg, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, g, pointwise = geom
    xp = be.xp
    ckg, L = cg * kh * kw, oh * ow
    gx = gw = None
    if not (need_x or need_w):
        return gx, gw
    transposed = need_x and _use_transposed_path(geom)
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
    """CUDA ``dx`` of a stride-1 convolution as :func:`_input_grad_as_conv` does it, in 2-D:
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


def _weight_grad(xp: Any, g4: Any, cols4: Any) -> Any:
    """``sum_n g4[n] @ cols4[n]^T``: (N, g, O/g, L) x (N, g, Ck/g, L) -> (g, O/g, Ck/g)."""
    n = g4.shape[0]
    # Batched GEMM over samples, then a reduction over the batch. The per-sample products are
    # small (O x Ck); chunking bounds the temporary when O*Ck is comparable to Ck*L.
    per = g4.shape[1] * g4.shape[2] * cols4.shape[2]
    chunk = max(1, min(n, (1 << 22) // max(per, 1)))
    acc = None
    for s in range(0, n, chunk):
        part = xp.matmul(g4[s : s + chunk], cols4[s : s + chunk].transpose(0, 1, 3, 2))
        part = part.sum(axis=0)
        acc = part if acc is None else acc + part
    return acc


def _check_float(op: str, name: str, a: Any) -> None:
    kind = np.dtype(a.dtype).kind
    if kind != "f":
        raise TypeError(
            f"{op}: {name} must be a floating tensor (float32 or float64), got dtype {a.dtype}; "
            f"convert integer images with .astype('float32') (and scale them) first"
        )


def conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntPair = 1,
    padding: Padding = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> Tensor:
    """2-D cross-correlation, as ``torch.nn.functional.conv2d``.

    Args:
        x: (N, C, H, W) floating tensor (float32 or float64).
        weight: (O, C/groups, kh, kw), same dtype as ``x``.
        bias: optional (O,).
        stride, dilation: int or (h, w) pair, >= 1.
        padding: int, (h, w) pair, ``"valid"`` (none) or ``"same"`` (stride 1 only; even
            kernels pad one more on the bottom/right, as PyTorch).
        groups: C and O must both be divisible by it; ``groups == C`` is depthwise.

    Returns:
        (N, O, OH, OW) with ``OH = (H + pad_h - dilation_h*(kh-1) - 1) // stride_h + 1``.

    Raises:
        TypeError: integer/bool inputs or mismatched dtypes.
        ValueError: shapes or arguments that do not fit (the message names the expected and
            received values).
    """
    if not isinstance(x, Tensor) or not isinstance(weight, Tensor):
        raise TypeError(
            f"conv2d: input and weight must be Tensors, got {type(x).__name__} and "
            f"{type(weight).__name__}"
        )
    _check_float("conv2d", "input", x.data)
    _check_float("conv2d", "weight", weight.data)
    if x.ndim != 4:
        raise ValueError(f"conv2d: input must be 4-D (N, C, H, W), got shape {x.shape}")
    if weight.ndim != 4:
        raise ValueError(
            f"conv2d: weight must be 4-D (out, in/groups, kh, kw), got shape {weight.shape}"
        )
    if x.dtype != weight.dtype:
        raise TypeError(
            f"conv2d: input dtype {x.dtype} and weight dtype {weight.dtype} differ; "
            f"cast one of them"
        )
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"conv2d: groups must be a positive int, got {groups!r}")
    groups = int(groups)
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    if c % groups:
        raise ValueError(
            f"conv2d: groups={groups} must divide the input channels, got {c} channels "
            f"(input shape {x.shape})"
        )
    if o % groups:
        raise ValueError(
            f"conv2d: groups={groups} must divide the output channels, got {o} "
            f"(weight shape {weight.shape})"
        )
    if cg != c // groups:
        raise ValueError(
            f"conv2d: weight {weight.shape} expects {cg * groups} input channels "
            f"({cg} per group x {groups} groups), but the input has {c} (shape {x.shape})"
        )
    if kh < 1 or kw < 1:
        raise ValueError(f"conv2d: kernel size must be >= 1, got weight shape {weight.shape}")
    if bias is not None:
        if not isinstance(bias, Tensor):
            raise TypeError(f"conv2d: bias must be a Tensor or None, got {type(bias).__name__}")
        _check_float("conv2d", "bias", bias.data)
        if bias.shape != (o,):
            raise ValueError(f"conv2d: bias must have shape ({o},), got {bias.shape}")
        if bias.dtype != x.dtype:
            raise TypeError(f"conv2d: bias dtype {bias.dtype} differs from input dtype {x.dtype}")
    s = _pair(stride, "stride")
    d = _pair(dilation, "dilation")
    pads = _resolve_padding(padding, (kh, kw), s, d)
    pt, pb, pl, pr = pads
    eff_h, eff_w = d[0] * (kh - 1) + 1, d[1] * (kw - 1) + 1
    if eff_h > h + pt + pb or eff_w > w + pl + pr:
        raise ValueError(
            f"conv2d: kernel ({kh}, {kw}) with dilation {d} spans ({eff_h}, {eff_w}), larger "
            f"than the padded input ({h + pt + pb}, {w + pl + pr}) (input {x.shape}, "
            f"padding (top, bottom, left, right) = {pads})"
        )
    oh, ow = conv2d_output_size(h, w, (kh, kw), s, pads, d)
    if oh < 1 or ow < 1:  # pragma: no cover - implied by the span check above
        raise ValueError(f"conv2d: output size ({oh}, {ow}) is below 1 for input {x.shape}")
    kw_args = dict(stride=s, pads=pads, dilation=d, groups=groups)
    if bias is None:
        return Conv2dFunction.apply(x, weight, **kw_args)
    return Conv2dFunction.apply(x, weight, bias, **kw_args)
