"""Fused optimizer updates on the GPU: launchers for ``cuda/optim.cu``.

Same names and signatures as :mod:`gpucnn.backend.numpy_ops.optim`: ONE kernel launch per
parameter tensor updates the parameter and its state buffers in place. ``param`` and the
state arrays must be C-contiguous (they are updated through raw pointers); ``grad`` is made
contiguous and cast to ``param.dtype``. State arrays unused by the options may be None.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucnn.backend.checks import nadam_coefficients
from gpucnn.backend.runtime import current_runtime, dtype_suffix

__all__ = ["sgd_update", "adam_update", "rmsprop_update", "adagrad_update", "nadam_update"]

_FAMILY = "optim"


def _prep(op: str, param: Any, grad: Any, *state: Any) -> tuple[Any, Any, list[Any]]:
    """Contiguous grad in param.dtype, and the state arrays (None → param, never touched)."""
    xp = current_runtime().xp
    if tuple(grad.shape) != tuple(param.shape):
        raise ValueError(
            f"{op}: grad shape {tuple(grad.shape)} does not match param shape {tuple(param.shape)}"
        )
    for name, a in (("param", param),) + tuple(("state", s) for s in state if s is not None):
        if not a.flags.c_contiguous:
            raise ValueError(f"{op}: {name} array must be C-contiguous to be updated in place")
        if a.dtype != param.dtype:
            raise TypeError(f"{op}: {name} dtype {a.dtype} differs from param dtype {param.dtype}")
    g = xp.ascontiguousarray(grad, dtype=param.dtype)
    return xp, g, [param if s is None else s for s in state]


def sgd_update(
    param: Any,
    grad: Any,
    buf: Any | None,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    first_step: bool,
) -> None:
    """SGD step in place (PyTorch semantics); kernel ``sgd_f32/_f64``, one thread per element."""
    _, g, (b,) = _prep("sgd_update", param, grad, buf)
    t = param.dtype.type
    n = int(param.size)
    current_runtime().launch(
        _FAMILY,
        f"sgd_{dtype_suffix(param.dtype, 'sgd')}",
        n,
        (
            param,
            g,
            b,
            t(lr),
            t(momentum),
            t(dampening),
            t(weight_decay),
            np.int32(bool(nesterov)),
            np.int32(bool(first_step)),
            np.int64(n),
        ),
    )


def adam_update(
    param: Any,
    grad: Any,
    exp_avg: Any,
    exp_avg_sq: Any,
    max_exp_avg_sq: Any | None,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    step: int,
    decoupled: bool,
    amsgrad: bool,
) -> None:
    """Adam / AdamW step ``step`` (1-based) in place; kernel ``adam_f32/_f64``."""
    _, g, (m, v, vmax) = _prep("adam_update", param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq)
    t = param.dtype.type
    bc1 = t(1.0 - float(beta1) ** step)
    bc2 = t(1.0 - float(beta2) ** step)
    n = int(param.size)
    current_runtime().launch(
        _FAMILY,
        f"adam_{dtype_suffix(param.dtype, 'adam')}",
        n,
        (
            param,
            g,
            m,
            v,
            vmax,
            t(lr),
            t(beta1),
            t(beta2),
            t(eps),
            t(weight_decay),
            bc1,
            bc2,
            np.int32(bool(decoupled)),
            np.int32(bool(amsgrad)),
            np.int64(n),
        ),
    )


def rmsprop_update(
    param: Any,
    grad: Any,
    square_avg: Any,
    grad_avg: Any | None,
    momentum_buf: Any | None,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
) -> None:
    """RMSprop step in place (PyTorch semantics); kernel ``rmsprop_f32/_f64``."""
    _, g, (sq, ga, mb) = _prep("rmsprop_update", param, grad, square_avg, grad_avg, momentum_buf)
    t = param.dtype.type
    n = int(param.size)
    current_runtime().launch(
        _FAMILY,
        f"rmsprop_{dtype_suffix(param.dtype, 'rmsprop')}",
        n,
        (
            param,
            g,
            sq,
            ga,
            mb,
            t(lr),
            t(alpha),
            t(eps),
            t(weight_decay),
            t(momentum),
            np.int32(bool(centered)),
            np.int64(n),
        ),
    )


def adagrad_update(
    param: Any,
    grad: Any,
    state_sum: Any,
    lr: float,
    lr_decay: float,
    weight_decay: float,
    eps: float,
    step: int,
) -> None:
    """Adagrad step ``step`` (1-based) in place (PyTorch semantics); kernel ``adagrad_f32/_f64``."""
    _, g, (s,) = _prep("adagrad_update", param, grad, state_sum)
    t = param.dtype.type
    clr = t(float(lr) / (1.0 + (step - 1) * float(lr_decay)))
    n = int(param.size)
    current_runtime().launch(
        _FAMILY,
        f"adagrad_{dtype_suffix(param.dtype, 'adagrad')}",
        n,
        (param, g, s, clr, t(eps), t(weight_decay), np.int64(n)),
    )


def nadam_update(
    param: Any,
    grad: Any,
    exp_avg: Any,
    exp_avg_sq: Any,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    mu: float,
    mu_next: float,
    mu_product: float,
    step: int,
    decoupled: bool,
) -> None:
    """NAdam step ``step`` (1-based) in place (PyTorch semantics); kernel ``nadam_f32/_f64``."""
    _, g, (m, v) = _prep("nadam_update", param, grad, exp_avg, exp_avg_sq)
    t = param.dtype.type
    bc2, coef_g, coef_m = nadam_coefficients(lr, beta2, mu, mu_next, mu_product, step)
    n = int(param.size)
    current_runtime().launch(
        _FAMILY,
        f"nadam_{dtype_suffix(param.dtype, 'nadam')}",
        n,
        (
            param,
            g,
            m,
            v,
            t(lr),
            t(beta1),
            t(beta2),
            t(eps),
            t(weight_decay),
            t(bc2),
            t(coef_g),
            t(coef_m),
            np.int32(bool(decoupled)),
            np.int64(n),
        ),
    )
