"""2-D convolution (PyTorch semantics, NCHW): the autograd Function and argument handling.

Shapes: input ``x`` (N, C, H, W); weight (O, C/groups, kh, kw); bias (O,); output
(N, O, OH, OW). :func:`conv2d` checks the tensors;
:class:`~gpucnn.backend.geometry.Conv2dGeometry` validates the shapes and arguments once and
carries every size; the backend computes: ``be.conv2d_forward`` / ``be.conv2d_backward``
(:mod:`gpucnn.backend.numpy_ops.conv` picks among its NumPy routes,
:mod:`gpucnn.backend.cuda_ops.conv` runs our im2col kernels + cuBLAS) and ``be.bias_grad_nchw``
for the bias. Nothing here depends on the device.
"""

from __future__ import annotations

from typing import Any

from gpucnn.backend.geometry import (
    Conv2dGeometry,
    IntPair,
    Padding,
    conv2d_output_size,
    same_padding,
)
from gpucnn.functional._dtypes import require_float
from gpucnn.functional._unbatched import accepts_unbatched
from gpucnn.tensor import Context, Function, Tensor, is_grad_enabled

__all__ = ["conv2d", "conv2d_bias_act", "conv2d_output_size", "same_padding", "Conv2dFunction",
           "Conv2dActFunction"]


def _backend(a: Any) -> Any:
    from gpucnn.backend import backend_of

    return backend_of(a)


class Conv2dFunction(Function):
    """Autograd node of :func:`conv2d`: ``apply(x, weight[, bias], geom=)`` with a
    :class:`~gpucnn.backend.geometry.Conv2dGeometry` (or ``stride=, pads=, dilation=,
    groups=``, from which one is made); arguments are already validated."""

    @staticmethod
    def forward(
        ctx: Context,
        x: Any,
        weight: Any,
        bias: Any = None,
        *,
        geom: Conv2dGeometry | None = None,
        stride: tuple[int, int] = (1, 1),
        pads: tuple[int, int, int, int] = (0, 0, 0, 0),
        dilation: tuple[int, int] = (1, 1),
        groups: int = 1,
        precision: str | None = None,
    ) -> Any:
        be = _backend(x)
        if geom is None:
            geom = Conv2dGeometry.create(x.shape, weight.shape, stride, pads, dilation, groups)
        needs = ctx.needs_input_grad if is_grad_enabled() else ()
        need_dx = bool(needs and needs[0])
        need_dw = bool(len(needs) > 1 and needs[1])
        kw = {} if precision is None else {"precision": precision}  # autocast: "fp16"/"bf16"
        y, saved = be.conv2d_forward(x, weight, bias, geom, need_dx, need_dw, **kw)
        ctx.geom, ctx.conv_saved, ctx.has_bias = geom, saved, bias is not None
        return y

    @staticmethod
    def backward(ctx: Context, gy: Any) -> tuple:
        be = _backend(gy)
        needs = ctx.needs_input_grad
        gx, gw = be.conv2d_backward(gy, ctx.geom, ctx.conv_saved, bool(needs[0]), bool(needs[1]))
        if ctx.has_bias:
            return gx, gw, be.bias_grad_nchw(gy) if needs[2] else None
        return gx, gw


class Conv2dActFunction(Function):
    """Autograd node of :func:`conv2d_bias_act`: ``act(conv2d(x, weight) + bias)`` as one op
    (``apply(x, weight[, bias], geom=, kind=, param=)``). The backend fuses bias and activation
    into the convolution's epilogue where it can (the CUDA implicit-GEMM kernels); the backward
    takes the activation's gradient from what the forward saved (the output's mask for
    relu/leaky relu, the pre-activation for gelu), then the convolution's."""

    @staticmethod
    def forward(ctx: Context, x: Any, weight: Any, bias: Any = None, *,
                geom: Conv2dGeometry, kind: str, param: float) -> Any:  # fmt: skip
        be = _backend(x)
        needs = ctx.needs_input_grad if is_grad_enabled() else ()
        need_dx = bool(needs and needs[0])
        need_dw = bool(len(needs) > 1 and needs[1])
        y, act_saved, saved = be.conv2d_forward_act(x, weight, bias, geom, kind, param,
                                                    need_dx, need_dw)  # fmt: skip
        ctx.geom, ctx.conv_saved, ctx.has_bias = geom, saved, bias is not None
        ctx.kind, ctx.param = kind, param
        ctx.act_saved = act_saved if needs else None
        return y

    @staticmethod
    def backward(ctx: Context, gy: Any) -> tuple:
        be = _backend(gy)
        needs = ctx.needs_input_grad
        g = be.activation_backward(ctx.act_saved, gy, ctx.kind, ctx.param)
        gx, gw = be.conv2d_backward(g, ctx.geom, ctx.conv_saved, bool(needs[0]), bool(needs[1]))
        if ctx.has_bias:
            return gx, gw, be.bias_grad_nchw(g) if needs[2] else None
        return gx, gw


def conv2d_bias_act(x: Tensor, weight: Tensor, bias: Tensor | None, geom: Conv2dGeometry,
                    kind: str, param: float = 0.0) -> Tensor:  # fmt: skip
    """``activation(conv2d(x, weight) + bias)`` as one fused op, for batched NCHW ``x``
    (N, C, H, W) and a geometry :func:`conv2d` validated; ``kind`` one of
    :data:`gpucnn.backend.checks.FUSED_ACTIVATIONS` (``param``: leaky relu's slope). What
    ``Conv2D(activation="relu" | "leaky_relu" | "gelu")`` runs; equal to the two ops."""
    if bias is None:
        return Conv2dActFunction.apply(x, weight, geom=geom, kind=kind, param=param)
    return Conv2dActFunction.apply(x, weight, bias, geom=geom, kind=kind, param=param)


def _check_float(op: str, name: str, a: Any) -> None:
    require_float(op, a, name)


@accepts_unbatched
def conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntPair = 1,
    padding: Padding = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    *,
    activation: str | None = None,
    negative_slope: float = 0.01,
) -> Tensor:
    """2-D cross-correlation, as ``torch.nn.functional.conv2d``.

    Args:
        x: (N, C, H, W) floating tensor (float32 or float64), or unbatched (C, H, W) (the
            result is then (O, OH, OW)).
        weight: (O, C/groups, kh, kw), same dtype as ``x``.
        bias: optional (O,).
        stride, dilation: int or (h, w) pair, >= 1.
        padding: int, (h, w) pair, ``"valid"`` (none) or ``"same"`` (stride 1 only; even
            kernels pad one more on the bottom/right, as PyTorch).
        groups: C and O must both be divisible by it; ``groups == C`` is depthwise.
        activation: (a gpucnn extension) ``"relu"``, ``"leaky_relu"`` (``negative_slope`` > 0),
            ``"gelu"`` or ``"gelu_tanh"`` applied to the result as one fused op
            (:func:`conv2d_bias_act`: the bias and activation in the CUDA implicit-GEMM
            kernel's epilogue); equal to the activation applied after.

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
    if x.dtype != weight.dtype:
        raise TypeError(
            f"conv2d: input dtype {x.dtype} and weight dtype {weight.dtype} differ; "
            f"cast one of them"
        )
    if bias is not None:
        if not isinstance(bias, Tensor):
            raise TypeError(f"conv2d: bias must be a Tensor or None, got {type(bias).__name__}")
        _check_float("conv2d", "bias", bias.data)
        o = weight.shape[0]
        if bias.shape != (o,):
            raise ValueError(f"conv2d: bias must have shape ({o},), got {bias.shape}")
        if bias.dtype != x.dtype:
            raise TypeError(f"conv2d: bias dtype {bias.dtype} differs from input dtype {x.dtype}")
    if x.ndim == 4 and x.shape[1] == 0:
        raise ValueError(
            f"conv2d: input {x.shape} has zero channels; expected (N, C, H, W) with C >= 1"
        )
    kind, param = None, 0.0
    if activation is not None:
        from gpucnn.backend.checks import check_fused_activation

        kind = activation
        param = float(negative_slope) if kind == "leaky_relu" else 0.0
        check_fused_activation("conv2d", kind, param)
    geom = Conv2dGeometry.create(x.shape, weight.shape, stride, padding, dilation, groups)
    from gpucnn.amp.autocast_mode import active_dtype, cast

    lp = active_dtype(x, weight, bias)
    if lp is not None:  # autocast: operands and output rounded (see gpucnn.amp.autocast_mode)
        x, weight, bias = cast(x, lp), cast(weight, lp), cast(bias, lp)
        p = {"float16": "fp16", "bfloat16": "bf16"}[lp]  # tensor cores on CUDA
        y = (Conv2dFunction.apply(x, weight, geom=geom, precision=p) if bias is None
             else Conv2dFunction.apply(x, weight, bias, geom=geom, precision=p))
        y = cast(y, lp)
        if kind is None:
            return y
        from gpucnn.functional.basic import _apply_activation

        return _apply_activation(y, kind, param)
    if kind is not None:
        return conv2d_bias_act(x, weight, bias, geom, kind, param)
    if bias is None:
        return Conv2dFunction.apply(x, weight, geom=geom)
    return Conv2dFunction.apply(x, weight, bias, geom=geom)
