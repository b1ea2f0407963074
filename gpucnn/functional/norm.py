"""Batch normalisation and dropout (PyTorch semantics, NCHW).

``batch_norm`` runs on the backend primitives ``batchnorm_stats``, ``batchnorm_forward`` and
``batchnorm_backward`` (``cuda/norm.cu`` on the GPU, NumPy twins on the CPU). Dropout draws
its mask from :func:`gpucnn.random.uniform` (a Philox stream, identical on both backends), so
:func:`gpucnn.manual_seed` makes it reproducible.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucnn import backend as _backend
from gpucnn._checks import check_bool, check_number
from gpucnn.functional._dtypes import require_float
from gpucnn.random import uniform
from gpucnn.tensor import Context, Function, Tensor

__all__ = ["batch_norm", "dropout", "dropout2d"]


def _be(a: Any) -> Any:
    return _backend.backend_of(a)


# --------------------------------------------------------------------------- batch norm


class _BatchNorm(Function):
    """Forward/backward of batch norm; tensor args are x, then weight and bias when given."""

    @staticmethod
    def forward(
        ctx: Context,
        x: Any,
        *affine: Any,
        mean: Any,
        var: Any,
        has_weight: bool,
        has_bias: bool,
        eps: float,
        training: bool,
    ) -> Any:
        be = _be(x)
        it = iter(affine)
        w = next(it) if has_weight else None
        b = next(it) if has_bias else None
        ctx.save_for_backward(x, mean, var, w)
        ctx.flags = (has_weight, has_bias, eps, training)
        return be.batchnorm_forward(x, mean, var, w, b, eps)

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple:
        x, mean, var, w = ctx.saved
        has_weight, has_bias, eps, training = ctx.flags
        dx, dw, db = _be(g).batchnorm_backward(g, x, mean, var, w, eps, training)
        out: list[Any] = [dx if ctx.needs_input_grad[0] else None]
        if has_weight:
            out.append(dw)
        if has_bias:
            out.append(db)
        return tuple(out)


def _as_tensor(a: Any) -> Tensor | None:
    if a is None or isinstance(a, Tensor):
        return a
    return Tensor(a)


def _raw(a: Any) -> Any:
    return a.data if isinstance(a, Tensor) else a


def batch_norm(
    x: Tensor,
    running_mean: Any | None,
    running_var: Any | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Batch normalisation over the channel dim 1 of ``x`` (N, C) or (N, C, H, W) (or (N, C, L)).

    ``y = (x - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c]``. In training (or when
    no running statistics are given) mean/var are the batch statistics over every dim but 1
    (biased variance), and ``running_mean``/``running_var`` (C,) — raw arrays or Tensors —
    are updated IN PLACE: ``r = (1 - momentum) * r + momentum * stat`` with the UNBIASED
    variance, as PyTorch. In eval the running statistics are used and not changed.

    Raises:
        ValueError: wrong rank, a (C,) vector of the wrong shape, or a single value per
            channel in training.
    """
    op = "batch_norm"
    if not isinstance(x, Tensor):
        x = Tensor(x)
    require_float(op, x, "input")
    if x.ndim < 2:
        raise ValueError(
            f"batch_norm: expected input of shape (N, C) or (N, C, H, W), got shape {x.shape}"
        )
    c = x.shape[1]
    for name, v in (
        ("running_mean", running_mean),
        ("running_var", running_var),
        ("weight", weight),
        ("bias", bias),
    ):
        if v is None:
            continue
        if not hasattr(v, "shape") or not hasattr(v, "dtype"):
            raise TypeError(
                f"batch_norm: {name} must be a Tensor, an array or None, got {type(v).__name__}"
            )
        if tuple(v.shape) != (c,):
            raise ValueError(
                f"batch_norm: {name} must have shape ({c},) for input {x.shape} with {c} "
                f"channels, got {tuple(v.shape)}"
            )
        require_float(op, v, name)
    momentum = check_number(op, "momentum", momentum, 0.0, 1.0)
    eps = check_number(op, "eps", eps, 0.0, min_open=True)
    training = check_bool(op, "training", training)
    be = _be(x.data)
    use_batch = training or running_mean is None or running_var is None
    if use_batch and x.numel() == 0:
        # An empty batch: an empty result, running statistics untouched, zero gradients for
        # weight and bias (PyTorch's answer). The statistics are placeholders.
        mean = be.xp.zeros((c,), dtype=x.dtype)
        var = be.xp.ones((c,), dtype=x.dtype)
        use_batch = False
    elif use_batch:
        m = x.numel() // max(c, 1)
        if m <= 1:
            raise ValueError(
                f"batch_norm: expected more than 1 value per channel when training, got input "
                f"shape {x.shape}"
            )
        mean, var = be.batchnorm_stats(x.data)
        if training:
            unbiased = var * var.dtype.type(m / (m - 1))
            mom = float(momentum)
            for r, stat in ((running_mean, mean), (running_var, unbiased)):
                if r is None:
                    continue
                arr = _raw(r)
                arr *= arr.dtype.type(1.0 - mom)
                arr += arr.dtype.type(mom) * stat.astype(arr.dtype, copy=False)
    else:
        mean = be.asarray(_raw(running_mean), dtype=x.dtype)
        var = be.asarray(_raw(running_var), dtype=x.dtype)
    w, b = _as_tensor(weight), _as_tensor(bias)
    affine = tuple(t for t in (w, b) if t is not None)
    return _BatchNorm.apply(
        x,
        *affine,
        mean=mean,
        var=var,
        has_weight=w is not None,
        has_bias=b is not None,
        eps=float(eps),
        training=bool(use_batch),
    )


# --------------------------------------------------------------------------- dropout


class _MaskMul(Function):
    """``y = x * mask`` with a constant (broadcastable) mask; grad = g * mask."""

    @staticmethod
    def forward(ctx: Context, x: Any, mask: Any) -> Any:
        ctx.mask = mask
        return x * mask

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        return g * ctx.mask


def _check_p(op: str, p: float) -> float:
    return check_number(op, "probability p", p, 0.0, 1.0)


def _mask(x: Tensor, shape: tuple, p: float) -> Any:
    """Keep-mask of ``shape`` scaled by 1/(1-p) (zeros when p == 1), dtype of x."""
    be = _be(x.data)
    if p >= 1.0:
        return be.xp.zeros(shape, dtype=x.dtype)
    u = uniform(shape, np.float64 if x.dtype == np.float64 else np.float32, be.name)
    return (u >= p).astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))


def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Inverted dropout: zero each element with probability ``p``, scale the rest by 1/(1-p).

    Identity (returns ``x``) when not training or ``p == 0``; zeros when ``p == 1``. The mask
    comes from :func:`gpucnn.random.uniform` (seeded by :func:`gpucnn.manual_seed`).
    """
    p = _check_p("dropout", p)
    if not isinstance(x, Tensor):
        raise TypeError(f"dropout: input must be a Tensor, got {type(x).__name__}")
    require_float("dropout", x)
    training = check_bool("dropout", "training", training)
    if not training or p == 0.0:
        return x
    return _MaskMul.apply(x, _mask(x, x.shape, p))


def dropout2d(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Channel-wise dropout of ``x`` (N, C, H, W): whole feature maps (n, c) are zeroed with
    probability ``p``, the others scaled by 1/(1-p). Identity when not training or p == 0.
    """
    p = _check_p("dropout2d", p)
    if not isinstance(x, Tensor):
        raise TypeError(f"dropout2d: input must be a Tensor, got {type(x).__name__}")
    require_float("dropout2d", x)
    training = check_bool("dropout2d", "training", training)
    if x.ndim != 4:
        raise ValueError(f"dropout2d: expected a 4-D (N, C, H, W) input, got shape {x.shape}")
    if not training or p == 0.0:
        return x
    return _MaskMul.apply(x, _mask(x, (x.shape[0], x.shape[1], 1, 1), p))
