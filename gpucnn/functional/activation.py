"""Activation functions, softmax and log-softmax (PyTorch semantics, any backend).

Element-wise activations, PReLU and the softmax pair run on the backend primitives of
``cuda/activation.cu`` / ``cuda/softmax_xent.cu`` (NumPy twins on the CPU): one primitive call
forward and one backward. :func:`get_activation` maps layer-argument names to these functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpucnn._checks import check_axis, check_number
from gpucnn.backend import backend_of
from gpucnn.functional._dtypes import require_float
from gpucnn.functional.basic import resolve_dim
from gpucnn.tensor import Context, Function, Tensor

__all__ = [
    "relu",
    "leaky_relu",
    "prelu",
    "elu",
    "sigmoid",
    "tanh",
    "gelu",
    "softplus",
    "softmax",
    "log_softmax",
    "identity",
    "get_activation",
    "fusable_activation",
    "ACTIVATIONS",
]

# Activations whose backward pass reads the forward OUTPUT (the rest read the input).
_USES_OUTPUT = ("sigmoid", "tanh")


def _check_float(op: str, x: Any) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected a Tensor, got {type(x).__name__}")
    return require_float(op, x)


# --------------------------------------------------------------------------- element-wise


class _Activation(Function):
    @staticmethod
    def forward(ctx: Context, x: Any, kind: str, param: float) -> Any:
        be = backend_of(x)
        y = be.activation_forward(x, kind, param)
        ctx.kind, ctx.param = kind, param
        ctx.save_for_backward(y if kind in _USES_OUTPUT else x)
        return y

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        (saved,) = ctx.saved
        return backend_of(saved).activation_backward(saved, g, ctx.kind, ctx.param)


def relu(x: Tensor) -> Tensor:
    """``max(x, 0)`` element-wise (gradient 0 at 0, as PyTorch); any shape."""
    return _Activation.apply(_check_float("relu", x), "relu", 0.0)


def leaky_relu(x: Tensor, negative_slope: float = 0.01) -> Tensor:
    """``x if x > 0 else negative_slope * x`` element-wise; any shape."""
    slope = check_number("leaky_relu", "negative_slope", negative_slope)
    return _Activation.apply(_check_float("leaky_relu", x), "leaky_relu", slope)


def elu(x: Tensor, alpha: float = 1.0) -> Tensor:
    """``x if x > 0 else alpha * (exp(x) - 1)`` element-wise; any shape."""
    alpha = check_number("elu", "alpha", alpha)
    return _Activation.apply(_check_float("elu", x), "elu", alpha)


def sigmoid(x: Tensor) -> Tensor:
    """Logistic function ``1 / (1 + exp(-x))``, computed without overflow; any shape."""
    return _Activation.apply(_check_float("sigmoid", x), "sigmoid", 0.0)


def tanh(x: Tensor) -> Tensor:
    """Hyperbolic tangent element-wise; any shape."""
    return _Activation.apply(_check_float("tanh", x), "tanh", 0.0)


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """GELU ``x * Phi(x)``; ``approximate="tanh"`` uses
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` (PyTorch's two forms); any shape."""
    if not isinstance(approximate, str) or approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    kind = "gelu" if approximate == "none" else "gelu_tanh"
    return _Activation.apply(_check_float("gelu", x), kind, 0.0)


class _Softplus(Function):
    @staticmethod
    def forward(ctx: Context, x: Any, beta: float, threshold: float) -> Any:
        xp = backend_of(x).xp
        bx = x * x.dtype.type(beta)
        linear = bx > threshold
        # log1p(exp(bx)) = max(bx, 0) + log1p(exp(-|bx|)): never overflows.
        sp = (xp.maximum(bx, 0) + xp.log1p(xp.exp(-xp.abs(bx)))) / x.dtype.type(beta)
        ctx.save_for_backward(bx, linear)
        return xp.where(linear, x, sp).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        bx, linear = ctx.saved
        xp = backend_of(g).xp
        e = xp.exp(-xp.abs(bx))
        sig = xp.where(bx >= 0, 1 / (1 + e), e / (1 + e))
        return (g * xp.where(linear, 1, sig)).astype(g.dtype, copy=False)


def softplus(x: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """``log(1 + exp(beta x)) / beta``, linear where ``beta x > threshold`` (PyTorch); any shape."""
    beta = check_number("softplus", "beta", beta, 0.0, min_open=True)
    threshold = check_number("softplus", "threshold", threshold, finite=False)
    return _Softplus.apply(_check_float("softplus", x), beta, threshold)


# --------------------------------------------------------------------------- PReLU


class _PReLU(Function):
    @staticmethod
    def forward(ctx: Context, x: Any, w: Any) -> Any:
        be = backend_of(x)
        w1 = w.reshape(-1)
        ctx.save_for_backward(x, w1)
        ctx.wshape = w.shape
        return be.prelu_forward(x, w1)

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple:
        x, w1 = ctx.saved
        dx, dw = backend_of(x).prelu_backward(x, w1, g)
        return dx, dw.reshape(ctx.wshape)


def prelu(x: Tensor, weight: Tensor) -> Tensor:
    """``x if x > 0 else weight[c] * x``; ``weight`` has one element (shared) or shape ``(C,)``
    applied on axis 1 (NCHW channels). Gradients reach ``x`` and ``weight``."""
    _check_float("prelu", x)
    _check_float("prelu", weight)
    if weight.numel() != 1:
        if weight.ndim != 1:
            raise ValueError(f"prelu: weight must have shape (1,) or (C,), got {weight.shape}")
        c = x.shape[1] if x.ndim >= 2 else None
        if weight.shape[0] != c:
            raise ValueError(
                f"prelu: weight has {weight.shape[0]} parameters, expected 1 or the number of "
                f"channels on axis 1 of the input {x.shape} ({c})"
            )
    if weight.dtype != x.dtype:
        raise TypeError(f"prelu: weight dtype {weight.dtype} differs from input dtype {x.dtype}")
    return _PReLU.apply(x, weight)


# --------------------------------------------------------------------------- softmax


class _Softmax(Function):
    @staticmethod
    def forward(ctx: Context, x: Any, axis: int, log: bool) -> Any:
        be = backend_of(x)
        if x.size == 0:  # an empty batch or an empty axis: an empty result, as PyTorch
            y = be.xp.zeros(x.shape, dtype=x.dtype)
        elif x.ndim == 0:  # a scalar is its own softmax axis: 1 (log: 0), as PyTorch
            y = (be.xp.zeros if log else be.xp.ones)((), dtype=x.dtype)
        else:
            y = be.log_softmax_forward(x, axis) if log else be.softmax_forward(x, axis)
        ctx.axis, ctx.log = axis, log
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        (y,) = ctx.saved
        be = backend_of(y)
        if y.size == 0 or y.ndim == 0:  # constant results: no gradient
            return be.xp.zeros(y.shape, dtype=y.dtype)
        if ctx.log:
            return be.log_softmax_backward(y, g, ctx.axis)
        return be.softmax_backward(y, g, ctx.axis)


def _softmax_axis(op: str, x: Tensor, axis: int, dim: int | None) -> int:
    _check_float(op, x)
    axis = resolve_dim(op, axis, dim, -1)
    # a 0-d tensor takes axis 0 or -1 (PyTorch): its softmax is 1, its log-softmax 0
    return check_axis(op, axis, x.ndim, "dim" if dim is not None else "axis", x.shape)


def softmax(x: Tensor, axis: int = -1, *, dim: int | None = None) -> Tensor:
    """``exp(x) / sum(exp(x))`` along ``axis`` (or PyTorch's ``dim``; max-subtracted: finite
    for any finite input); any shape, a 0-d tensor gives 1."""
    return _Softmax.apply(x, _softmax_axis("softmax", x, axis, dim), False)


def log_softmax(x: Tensor, axis: int = -1, *, dim: int | None = None) -> Tensor:
    """``x - logsumexp(x)`` along ``axis`` (or PyTorch's ``dim``; max-subtracted: finite for
    any finite input); any shape, a 0-d tensor gives 0."""
    return _Softmax.apply(x, _softmax_axis("log_softmax", x, axis, dim), True)


def identity(x: Tensor) -> Tensor:
    """``x`` unchanged (the ``"linear"`` activation)."""
    return x


# --------------------------------------------------------------------------- by name

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": relu,
    "leaky_relu": leaky_relu,
    "elu": elu,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "gelu": gelu,
    "softplus": softplus,
    "softmax": softmax,
    "log_softmax": log_softmax,
    "linear": identity,
}


def get_activation(name: str | Callable[[Tensor], Tensor] | None) -> Callable[[Tensor], Tensor]:
    """The activation function called ``name`` (case-insensitive); ``None`` or ``"linear"`` is
    the identity and a callable is returned as is.

    Raises:
        ValueError: unknown name (the message lists the valid ones).
    """
    if name is None:
        return identity
    if callable(name):
        return name
    if not isinstance(name, str):
        raise TypeError(f"get_activation: expected a name or a callable, got {type(name).__name__}")
    fn = ACTIVATIONS.get(name.strip().lower())
    if fn is None:
        raise ValueError(
            f"get_activation: unknown activation {name!r}; valid names are "
            f"{', '.join(sorted(ACTIVATIONS))} (or None)"
        )
    return fn


def fusable_activation(activation: Any) -> tuple[str, float] | None:
    """``(kind, slope)`` when ``activation`` (a name or the function itself) is one a
    convolution or dense layer fuses into its op with the same result (relu, leaky relu at
    its default slope, exact gelu), else ``None``."""
    if isinstance(activation, str):
        activation = ACTIVATIONS.get(activation.strip().lower())
    if activation is relu:
        return ("relu", 0.0)
    if activation is leaky_relu:
        return ("leaky_relu", 0.01)
    if activation is gelu:
        return ("gelu", 0.0)
    return None
