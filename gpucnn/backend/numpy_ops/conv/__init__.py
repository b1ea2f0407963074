"""The NumPy convolution: backend primitives over a geometry (``Conv2dGeometry``).

``conv2d_forward`` runs one of four algorithms, picked by :func:`conv2d_algorithm` (measured
rules, each next to its constants in the algorithm's file) unless the caller names one, and
``conv2d_backward`` follows the algorithm the forward took:

* ``"reference"`` (:mod:`.reference`) -- im2col + GEMM, the readable reference every other
  algorithm is tested against (plain 1x1 convolutions, and what no faster one takes);
* ``"frame"`` (:mod:`.frame`) -- the wide "frame" layout (batch folded into the GEMM columns);
* ``"batch_inner"`` (:mod:`.batch_inner`) -- the batch-innermost layout for small images;
* ``"winograd"`` (:mod:`.winograd`) -- Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions
  with enough channels, with its scratch and kept-input buffer pools.

``workspace_bytes`` bounds the scratch columns each chunk of the frame, batch-innermost and
Winograd algorithms builds (as cuDNN's workspace limit; default :data:`WORKSPACE_BYTES`); the
result does not depend on it. The rules' measurements come from
``python -m benchmarks.run --device cpu --only conv`` (``benchmarks/README.md``).
``conv2d_backward_data`` / ``conv2d_backward_weight`` compute one gradient alone through the
reference algorithm.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucnn.backend.geometry import Conv2dGeometry, ConvSaved
from gpucnn.backend.numpy_ops.conv import batch_inner, frame, reference, winograd

__all__ = [
    "conv2d_algorithm",
    "conv2d_forward",
    "conv2d_forward_act",
    "conv2d_backward",
    "conv2d_backward_data",
    "conv2d_backward_weight",
]

ALGORITHMS = ("reference", "frame", "batch_inner", "winograd")

# Scratch columns per chunk: about this many bytes stay in cache between the column build and
# the GEMMs (measured for each algorithm: see the notes by the rules in its file).
WORKSPACE_BYTES = 2 << 20


def conv2d_algorithm(geom: Conv2dGeometry) -> str:
    """The algorithm :func:`conv2d_forward` runs ``geom`` with (one of :data:`ALGORITHMS`).

    A plain 1x1 convolution needs no im2col (``"reference"``: ``x`` is its own columns). 3x3
    stride-1 convolutions with enough channels and tiles take Winograd F(2x2, 3x3)
    (:func:`.winograd.applies_well`; :func:`conv2d_forward` also checks the input's dynamic
    range, :func:`.winograd.range_ok`). Small images take the batch-innermost layout
    (:func:`.batch_inner.applies_well`), other ones the frame layout unless its garbage
    columns would dominate (:func:`.frame.applies_well`).
    """
    if geom.pointwise:
        return "reference"
    if winograd.applies_well(geom):
        return "winograd"
    return _without_winograd(geom)


def _without_winograd(geom: Conv2dGeometry) -> str:
    """The rule's choice among the im2col-based algorithms."""
    if batch_inner.applies_well(geom):
        return "batch_inner"
    if frame.applies_well(geom):
        return "frame"
    return "reference"


def _check_algorithm(algorithm: str, geom: Conv2dGeometry) -> str:
    if algorithm not in ALGORITHMS:
        raise ValueError(
            f"conv2d: algorithm must be one of {ALGORITHMS} or None, got {algorithm!r}"
        )
    if algorithm == "winograd" and not winograd.applies(geom):
        raise ValueError(
            "conv2d: algorithm 'winograd' needs a 3x3 kernel, stride 1, dilation 1, groups 1 "
            f"and top/left pads <= 2, got kernel ({geom.kh}, {geom.kw}), stride {geom.stride}, "
            f"dilation {geom.dilation}, groups {geom.groups}, pads {geom.pads}"
        )
    return algorithm


def _workspace(workspace_bytes: int | None) -> int:
    if workspace_bytes is None:
        return WORKSPACE_BYTES
    if isinstance(workspace_bytes, bool) or not isinstance(workspace_bytes, (int, np.integer)):
        raise TypeError(f"conv2d: workspace_bytes must be an int or None, got {workspace_bytes!r}")
    if workspace_bytes < 0:
        raise ValueError(f"conv2d: workspace_bytes must be >= 0, got {workspace_bytes}")
    return int(workspace_bytes)


def conv2d_forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    geom: Conv2dGeometry,
    need_dx: bool = True,
    need_dw: bool = True,
    algorithm: str | None = None,
    workspace_bytes: int | None = None,
    precision: str | None = None,
) -> tuple[np.ndarray, ConvSaved]:
    """``(y (N, O, oh, ow), saved)``: the convolution of ``x`` with ``weight`` (+ ``bias``).

    ``precision`` ``"fp16"``/``"bf16"`` (autocast) says ``x`` and ``weight`` hold values of
    that format; the float32 routes compute their products exactly, so it changes nothing
    here (the CUDA twin runs tensor-core kernels on them).

    ``algorithm`` is one of :data:`ALGORITHMS` or ``None`` (:func:`conv2d_algorithm`; where
    it picks Winograd for an ``x`` whose range :func:`.winograd.range_ok` refuses, the next
    algorithm of the rule runs, and the backward does the same for such a ``dy``);
    ``workspace_bytes`` bounds each chunk's scratch columns (``None``: :data:`WORKSPACE_BYTES`;
    0: the smallest chunks). ``saved`` keeps what :func:`conv2d_backward` needs: the
    algorithm's copy of the input when ``need_dw``, the weight when ``need_dx``.
    """
    if precision not in (None, "fp16", "bf16"):
        raise ValueError(f"conv2d: precision must be None, 'fp16' or 'bf16', got {precision!r}")
    x, weight = np.ascontiguousarray(x), np.ascontiguousarray(weight)
    algo = conv2d_algorithm(geom) if algorithm is None else _check_algorithm(algorithm, geom)
    guarded = algorithm is None and algo == "winograd"
    if guarded and not winograd.range_ok(x):
        algo = _without_winograd(geom)
    ws = _workspace(workspace_bytes)
    layout: Any = None
    if algo == "winograd":  # ``data``: what dW needs of the input
        y, data = winograd.forward(x, weight, bias, geom, need_dw, ws)
        # the rule's Winograd keeps x (a reference) for a backward whose dy it refuses
        layout = _Guard(x if need_dw else None) if guarded else None
    elif algo == "batch_inner":
        y, data, layout = batch_inner.forward(x, weight, bias, geom, ws)
    elif algo == "frame":
        y, data, layout = frame.forward(x, weight, bias, geom, ws)
    else:
        y, data = reference.forward(x, weight, bias, geom)
    saved = ConvSaved(algo, data if need_dw else None, weight if need_dx else None, layout, ws)
    return y, saved


def conv2d_forward_act(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    geom: Conv2dGeometry,
    kind: str,
    param: float = 0.0,
    need_dx: bool = True,
    need_dw: bool = True,
) -> tuple[np.ndarray, np.ndarray, ConvSaved]:
    """``(y, act_saved, saved)``: ``y = act(conv(x, weight) + bias)`` for ``kind`` in
    :data:`gpucnn.backend.checks.FUSED_ACTIVATIONS` (``param``: leaky relu's slope);
    ``act_saved`` is what ``activation_backward(act_saved, g, kind, param)`` needs (the
    pre-activation for gelu, else
    ``y`` itself), ``saved`` what :func:`conv2d_backward` needs. Here: the convolution, then
    the activation (the CUDA twin fuses both in the implicit-GEMM epilogue)."""
    from gpucnn.backend.checks import check_fused_activation
    from gpucnn.backend.numpy_ops.activation import activation_forward

    needs_pre = check_fused_activation("conv2d_forward_act", kind, param)
    pre, saved = conv2d_forward(x, weight, bias, geom, need_dx, need_dw)
    y = activation_forward(pre, kind, param)
    return y, (pre if needs_pre else y), saved


def conv2d_backward(
    dy: np.ndarray,
    geom: Conv2dGeometry,
    saved: ConvSaved,
    need_dx: bool,
    need_dw: bool,
    input_grad: str | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(dx, dW)`` (``None`` where not needed) by the algorithm :func:`conv2d_forward` took.

    ``input_grad`` says how ``dx`` is computed: ``"col2im"``, ``"transposed"`` or ``None``
    for the rule (:func:`gpucnn.backend.geometry.input_grad_path`); Winograd's ``dx`` is
    always its own transposed correlation (``"col2im"`` raises ``ValueError`` there).
    """
    dy = np.ascontiguousarray(dy)
    data, weight, algo = saved.data, saved.weight, saved.algorithm
    ws, ig = _workspace(saved.workspace_bytes), input_grad
    if algo == "frame":
        return frame.backward(dy, data, saved.layout, weight, geom, need_dx, need_dw, ws, ig)
    if algo == "winograd":
        if ig not in (None, "transposed"):
            raise ValueError(
                f"conv2d: the winograd algorithm computes dx as 'transposed', got input_grad={ig!r}"
            )
        guard = saved.layout
        if isinstance(guard, _Guard) and not winograd.range_ok(dy):
            gx = reference.backward(dy, None, weight, geom, True, False)[0] if need_dx else None
            gw = conv2d_backward_weight(dy, guard.x, geom) if need_dw else None
            return gx, gw
        return winograd.backward(dy, data, weight, geom, need_dx, need_dw, ws)
    if algo == "batch_inner":
        return batch_inner.backward(
            dy, data, saved.layout, weight, geom, need_dx, need_dw, ws, ig
        )
    return reference.backward(dy, data, weight, geom, need_dx, need_dw, ig)


class _Guard:
    """The layout of a rule-chosen Winograd forward: its input ``x`` (``None`` unless the
    weight gradient is needed), for a backward whose ``dy`` :func:`.winograd.range_ok`
    refuses."""

    __slots__ = ("x",)

    def __init__(self, x: np.ndarray | None) -> None:
        self.x = x


def conv2d_backward_data(
    dy: np.ndarray, weight: np.ndarray, geom: Conv2dGeometry, input_grad: str | None = None
) -> np.ndarray:
    """``dx (N, C, H, W)`` of the convolution ``geom`` from ``dy`` and ``weight``."""
    dy, weight = np.ascontiguousarray(dy), np.ascontiguousarray(weight)
    return reference.backward(dy, None, weight, geom, True, False, input_grad)[0]


def conv2d_backward_weight(dy: np.ndarray, x: np.ndarray, geom: Conv2dGeometry) -> np.ndarray:
    """``dW (O, C/groups, kh, kw)`` of the convolution ``geom`` from ``dy`` and its input."""
    cols = reference.columns(np.ascontiguousarray(x), geom)
    return reference.backward(np.ascontiguousarray(dy), cols, None, geom, False, True)[1]
