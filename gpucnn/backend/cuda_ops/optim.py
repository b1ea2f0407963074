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
from gpucnn.backend.runtime import current_hyper_slots, current_runtime, dtype_suffix

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


def _dev_hyper(op: str, param: Any, values: tuple, hyper: Any) -> tuple[bool, Any]:
    """``(launch, hyper array or None)`` for one update: with ``hyper`` given (or a graph's
    slots store active, :func:`gpucnn.backend.runtime.use_hyper_slots`) the ``*_dev`` kernel
    reads ``values`` from that device array; ``launch`` False: only record the values."""
    if hyper is None:
        slots = current_hyper_slots()
        if slots is None:
            return True, None
        return slots.launch, slots.take(values, param.dtype)
    if tuple(hyper.shape) != (len(values),) or hyper.dtype != param.dtype:
        raise ValueError(
            f"{op}: hyper must be a ({len(values)},) array of {param.dtype}, got "
            f"{hyper.dtype} {tuple(hyper.shape)}"
        )
    return True, current_runtime().xp.ascontiguousarray(hyper)


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
    hyper: Any = None,
) -> None:
    """SGD step in place (PyTorch semantics); kernel ``sgd_f32/_f64``, one thread per element
    (``sgd_dev_*`` reading ``[lr]`` from the device array ``hyper`` when given)."""
    _, g, (b,) = _prep("sgd_update", param, grad, buf)
    t = param.dtype.type
    n = int(param.size)
    go, dev = _dev_hyper("sgd_update", param, (lr,), hyper)
    if not go:
        return
    current_runtime().launch(
        _FAMILY,
        f"sgd_{'dev_' if dev is not None else ''}{dtype_suffix(param.dtype, 'sgd')}",
        n,
        (
            param,
            g,
            b,
            *((dev,) if dev is not None else (t(lr),)),
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
    hyper: Any = None,
) -> None:
    """Adam / AdamW step ``step`` (1-based) in place; kernel ``adam_f32/_f64``
    (``adam_dev_*`` reading ``[lr, 1 - beta1**step, 1 - beta2**step]`` from ``hyper``)."""
    _, g, (m, v, vmax) = _prep("adam_update", param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq)
    t = param.dtype.type
    bc1 = t(1.0 - float(beta1) ** step)
    bc2 = t(1.0 - float(beta2) ** step)
    n = int(param.size)
    go, dev = _dev_hyper("adam_update", param, (lr, bc1, bc2), hyper)
    if not go:
        return
    scalars = (dev,) if dev is not None else (t(lr),)
    tail = () if dev is not None else (bc1, bc2)
    current_runtime().launch(
        _FAMILY,
        f"adam_{'dev_' if dev is not None else ''}{dtype_suffix(param.dtype, 'adam')}",
        n,
        (
            param,
            g,
            m,
            v,
            vmax,
            *scalars,
            t(beta1),
            t(beta2),
            t(eps),
            t(weight_decay),
            *tail,
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
    hyper: Any = None,
) -> None:
    """RMSprop step in place (PyTorch semantics); kernel ``rmsprop_f32/_f64`` (``rmsprop_dev_*``
    reading ``[lr]`` from ``hyper``)."""
    _, g, (sq, ga, mb) = _prep("rmsprop_update", param, grad, square_avg, grad_avg, momentum_buf)
    t = param.dtype.type
    n = int(param.size)
    go, dev = _dev_hyper("rmsprop_update", param, (lr,), hyper)
    if not go:
        return
    current_runtime().launch(
        _FAMILY,
        f"rmsprop_{'dev_' if dev is not None else ''}{dtype_suffix(param.dtype, 'rmsprop')}",
        n,
        (
            param,
            g,
            sq,
            ga,
            mb,
            *((dev,) if dev is not None else (t(lr),)),
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
    hyper: Any = None,
) -> None:
    """Adagrad step ``step`` (1-based) in place (PyTorch semantics); kernel ``adagrad_f32/_f64``
    (``adagrad_dev_*`` reading ``[lr / (1 + (step - 1) * lr_decay)]`` from ``hyper``)."""
    _, g, (s,) = _prep("adagrad_update", param, grad, state_sum)
    t = param.dtype.type
    clr = t(float(lr) / (1.0 + (step - 1) * float(lr_decay)))
    n = int(param.size)
    go, dev = _dev_hyper("adagrad_update", param, (clr,), hyper)
    if not go:
        return
    current_runtime().launch(
        _FAMILY,
        f"adagrad_{'dev_' if dev is not None else ''}{dtype_suffix(param.dtype, 'adagrad')}",
        n,
        (param, g, s, clr if dev is None else dev, t(eps), t(weight_decay), np.int64(n)),
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
    hyper: Any = None,
) -> None:
    """NAdam step ``step`` (1-based) in place (PyTorch semantics); kernel ``nadam_f32/_f64``
    (``nadam_dev_*`` reading ``[lr, bc2, coef_g, coef_m]`` from ``hyper``)."""
    _, g, (m, v) = _prep("nadam_update", param, grad, exp_avg, exp_avg_sq)
    t = param.dtype.type
    bc2, coef_g, coef_m = nadam_coefficients(lr, beta2, mu, mu_next, mu_product, step)
    n = int(param.size)
    go, dev = _dev_hyper("nadam_update", param, (lr, bc2, coef_g, coef_m), hyper)
    if not go:
        return
    dev_args = (dev,) if dev is not None else (t(lr),)
    dev_tail = () if dev is not None else (t(bc2), t(coef_g), t(coef_m))
    current_runtime().launch(
        _FAMILY,
        f"nadam_{'dev_' if dev is not None else ''}{dtype_suffix(param.dtype, 'nadam')}",
        n,
        (
            param,
            g,
            m,
            v,
            *dev_args,
            t(beta1),
            t(beta2),
            t(eps),
            t(weight_decay),
            *dev_tail,
            np.int32(bool(decoupled)),
            np.int64(n),
        ),
    )
