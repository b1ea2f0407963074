"""The NumPy convolution: backend primitives over a geometry (``Conv2dGeometry``).

``conv2d_forward`` picks a route with :func:`_numpy_route` (measured rules, each next to its
constants in the route's file) and ``conv2d_backward`` follows the route the forward took:

* :mod:`.reference` -- im2col + GEMM, the readable reference every route is tested against
  (plain 1x1 convolutions, and what no faster route takes);
* :mod:`.frame` -- the wide "frame" layout (batch folded into the GEMM columns);
* :mod:`.batch_inner` -- the batch-innermost layout for small images;
* :mod:`.winograd` -- Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions with enough channels,
  with its scratch and kept-input buffer pools.

The rules' measurements come from ``python -m benchmarks.run --device cpu --only conv``
(``benchmarks/README.md``). ``conv2d_backward_data`` / ``conv2d_backward_weight`` compute one
gradient alone through the reference route.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucnn.backend.geometry import Conv2dGeometry, ConvSaved
from gpucnn.backend.numpy_ops.conv import batch_inner, frame, reference, winograd

__all__ = ["conv2d_forward", "conv2d_backward", "conv2d_backward_data", "conv2d_backward_weight"]


def conv2d_forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    geom: Conv2dGeometry,
    need_dx: bool = True,
    need_dw: bool = True,
) -> tuple[np.ndarray, ConvSaved]:
    """``(y (N, O, oh, ow), saved)``: the convolution of ``x`` with ``weight`` (+ ``bias``).

    ``saved`` keeps what :func:`conv2d_backward` needs: the route's copy of the input when
    ``need_dw``, the weight when ``need_dx``.
    """
    x, weight = np.ascontiguousarray(x), np.ascontiguousarray(weight)
    t = geom.as_tuple()
    n, c, h, w, o, cg, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, g, pointwise = t
    stride, dilation = (sh, sw), (dh, dw)
    route = _numpy_route(n, kw, sw, dw, ow, pointwise, kh, sh, dh, c, o, g)
    wino_ok = winograd._winograd_applies(kh, kw, stride, dilation, g) and max(pt, pl) <= 2
    if route == "winograd" and not wino_ok:
        # a conv Winograd F(2x2, 3x3) cannot run (or top/left pads > 2, where dx, the
        # correlation of dy padded by 2 - pad, would need negative pads)
        route = "batch_inner"
    layout: Any = None
    if route == "winograd":  # ``data``: what dW needs of the input
        y, data = winograd._winograd_forward(x, weight, bias, (pt, pl), oh, ow, need_dw)
    elif route == "batch_inner":
        y, data, layout = batch_inner._batch_inner_forward(
            x, weight, bias, stride, (pt, pl), dilation, g, oh, ow
        )
    elif route == "wide":
        y, data, layout = frame._wide_forward(
            x, weight, bias, stride, (pt, pl), dilation, g, oh, ow
        )
    else:
        y, data = reference.forward(x, weight, bias, t)
    return y, ConvSaved(route, data if need_dw else None, weight if need_dx else None, layout)


def conv2d_backward(
    dy: np.ndarray, geom: Conv2dGeometry, saved: ConvSaved, need_dx: bool, need_dw: bool
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(dx, dW)`` (``None`` where not needed) by the route :func:`conv2d_forward` took."""
    dy = np.ascontiguousarray(dy)
    t = geom.as_tuple()
    data, weight = saved.data, saved.weight
    if saved.route == "wide":
        return frame._wide_backward(dy, data, saved.layout, weight, t, need_dx, need_dw)
    if saved.route == "winograd":
        return winograd._winograd_backward(dy, data, weight, t, need_dx, need_dw)
    if saved.route == "batch_inner":
        return batch_inner._batch_inner_backward(
            dy, data, saved.layout, weight, t, need_dx, need_dw
        )
    return reference.backward(dy, data, weight, t, need_dx, need_dw)


def conv2d_backward_data(dy: np.ndarray, weight: np.ndarray, geom: Conv2dGeometry) -> np.ndarray:
    """``dx (N, C, H, W)`` of the convolution ``geom`` from ``dy`` and ``weight``."""
    dy, weight = np.ascontiguousarray(dy), np.ascontiguousarray(weight)
    return reference.backward(dy, None, weight, geom.as_tuple(), True, False)[0]


def conv2d_backward_weight(dy: np.ndarray, x: np.ndarray, geom: Conv2dGeometry) -> np.ndarray:
    """``dW (O, C/groups, kh, kw)`` of the convolution ``geom`` from ``dy`` and its input."""
    t = geom.as_tuple()
    cols = reference.columns(np.ascontiguousarray(x), t)
    return reference.backward(np.ascontiguousarray(dy), cols, None, t, False, True)[1]


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
    (:func:`.winograd._use_winograd`; needs the trailing arguments, left at 0 it never
    applies). Small images take the batch-innermost route
    (:func:`.batch_inner._use_batch_inner_path`), other ones the frame route unless its garbage
    columns would dominate (:func:`.frame._use_wide_path`).
    """
    if pointwise:
        return "generic"
    if winograd._use_winograd(n, kh, kw, sh, sw, dh, dw, c, o, groups, ow):
        return "winograd"
    if batch_inner._use_batch_inner_path(n, kw, sw, dw, ow):
        return "batch_inner"
    if frame._use_wide_path(kw, sw, dw, ow):
        return "wide"
    return "generic"
