"""Optimizer updates on NumPy: in-place twins of the ``cuda/optim.cu`` kernels.

Every primitive updates ``param`` and its state arrays IN PLACE (same objects, so references
held elsewhere stay valid) and returns None. Arithmetic runs in ``param.dtype`` with the
hyper-parameters cast to it, in the kernels' order of operations. State arrays unused by the
chosen options may be None.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucnn.backend.checks import nadam_coefficients

__all__ = ["sgd_update", "adam_update", "rmsprop_update", "adagrad_update", "nadam_update"]


def _grad(op: str, param: np.ndarray, grad: Any) -> np.ndarray:
    if tuple(grad.shape) != tuple(param.shape):
        raise ValueError(
            f"{op}: grad shape {tuple(grad.shape)} does not match param shape {tuple(param.shape)}"
        )
    return np.asarray(grad, dtype=param.dtype)


def _hyper(op: str, param: np.ndarray, hyper: Any, n: int) -> list:
    """The ``n`` values of ``hyper`` (a ``(n,)`` array of ``param.dtype``) as scalars."""
    if tuple(hyper.shape) != (n,) or hyper.dtype != param.dtype:
        raise ValueError(
            f"{op}: hyper must be a ({n},) array of {param.dtype}, got {hyper.dtype} "
            f"{tuple(hyper.shape)}"
        )
    return [param.dtype.type(v) for v in np.asarray(hyper)]


def sgd_update(
    param: np.ndarray,
    grad: np.ndarray,
    buf: np.ndarray | None,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    first_step: bool,
    hyper: np.ndarray | None = None,
) -> None:
    """SGD step in place (PyTorch semantics). ``buf``: momentum buffer (needed if momentum != 0).

    ``g = grad + wd*p``; with momentum: ``buf = g`` on the first step, else
    ``buf = momentum*buf + (1-dampening)*g``; ``g = g + momentum*buf`` (nesterov) or ``buf``;
    ``p -= lr*g``. Twin of kernel ``sgd_f32/_f64``; with ``hyper`` (``[lr]``, the values a
    captured CUDA graph reads from memory) of ``sgd_dev_f32/_f64``.
    """
    t = param.dtype.type
    if hyper is not None:
        (lr,) = _hyper("sgd_update", param, hyper, 1)
    g = _grad("sgd_update", param, grad)
    if weight_decay != 0:
        g = g + t(weight_decay) * param
    if momentum != 0:
        if first_step:
            buf[...] = g
        else:
            buf *= t(momentum)
            if dampening == 0:
                buf += g  # (1 - 0) * g is g: no temporary
            else:
                buf += (t(1) - t(dampening)) * g
        g = g + t(momentum) * buf if nesterov else buf
    param -= t(lr) * g


def adam_update(
    param: np.ndarray,
    grad: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    max_exp_avg_sq: np.ndarray | None,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    step: int,
    decoupled: bool,
    amsgrad: bool,
    hyper: np.ndarray | None = None,
) -> None:
    """Adam (``decoupled=False``) or AdamW (``True``) step number ``step`` (1-based) in place.

    Adam adds ``wd*p`` to the gradient; AdamW scales ``p *= 1 - lr*wd``. Then
    ``m = b1*m + (1-b1)*g``, ``v = b2*v + (1-b2)*g*g``, ``vhat = max(vmax, v)`` (amsgrad) or
    ``v``, ``p -= lr/bc1 * m / (sqrt(vhat)/sqrt(bc2) + eps)`` with ``bc = 1 - beta**step``.
    Twin of kernel ``adam_f32/_f64``; with ``hyper`` (``[lr, bc1, bc2]``) of ``adam_dev_*``.
    """
    t = param.dtype.type
    g = _grad("adam_update", param, grad)
    bc1 = t(1.0 - float(beta1) ** step)
    bc2 = t(1.0 - float(beta2) ** step)
    if hyper is not None:
        lr, bc1, bc2 = _hyper("adam_update", param, hyper, 3)
    if weight_decay != 0:
        if decoupled:
            param *= t(1) - t(lr) * t(weight_decay)
        else:
            g = g + t(weight_decay) * param
    exp_avg *= t(beta1)
    exp_avg += (t(1) - t(beta1)) * g
    exp_avg_sq *= t(beta2)
    exp_avg_sq += (t(1) - t(beta2)) * g * g
    v = exp_avg_sq
    if amsgrad:
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        v = max_exp_avg_sq
    denom = np.sqrt(v) / np.sqrt(bc2) + t(eps)
    param -= (t(lr) / bc1) * exp_avg / denom


def rmsprop_update(
    param: np.ndarray,
    grad: np.ndarray,
    square_avg: np.ndarray,
    grad_avg: np.ndarray | None,
    momentum_buf: np.ndarray | None,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    hyper: np.ndarray | None = None,
) -> None:
    """RMSprop step in place (PyTorch semantics; ``grad_avg`` if centered, ``momentum_buf`` if
    momentum > 0, both zero-initialised by the caller).

    ``g = grad + wd*p``; ``sq = a*sq + (1-a)*g*g``; centered: ``ga = a*ga + (1-a)*g``,
    ``avg = sqrt(sq - ga*ga) + eps``, else ``avg = sqrt(sq) + eps``; momentum:
    ``buf = m*buf + g/avg``, ``p -= lr*buf``, else ``p -= lr*g/avg``. Twin of ``rmsprop_f32/_f64``;
    with ``hyper`` (``[lr]``) of ``rmsprop_dev_*``.
    """
    t = param.dtype.type
    if hyper is not None:
        (lr,) = _hyper("rmsprop_update", param, hyper, 1)
    g = _grad("rmsprop_update", param, grad)
    if weight_decay != 0:
        g = g + t(weight_decay) * param
    square_avg *= t(alpha)
    square_avg += (t(1) - t(alpha)) * g * g
    if centered:
        grad_avg *= t(alpha)
        grad_avg += (t(1) - t(alpha)) * g
        avg = np.sqrt(square_avg - grad_avg * grad_avg) + t(eps)
    else:
        avg = np.sqrt(square_avg) + t(eps)
    if momentum > 0:
        momentum_buf *= t(momentum)
        momentum_buf += g / avg
        param -= t(lr) * momentum_buf
    else:
        param -= t(lr) * g / avg


def adagrad_update(
    param: np.ndarray,
    grad: np.ndarray,
    state_sum: np.ndarray,
    lr: float,
    lr_decay: float,
    weight_decay: float,
    eps: float,
    step: int,
    hyper: np.ndarray | None = None,
) -> None:
    """Adagrad step number ``step`` (1-based) in place (PyTorch semantics).

    ``g = grad + wd*p``; ``sum += g*g``; ``p -= clr * (g / (sqrt(sum) + eps))`` with
    ``clr = lr / (1 + (step-1)*lr_decay)``. Twin of kernel ``adagrad_f32/_f64``; with ``hyper``
    (``[clr]``) of ``adagrad_dev_*``.
    """
    t = param.dtype.type
    g = _grad("adagrad_update", param, grad)
    clr = t(float(lr) / (1.0 + (step - 1) * float(lr_decay)))
    if hyper is not None:
        (clr,) = _hyper("adagrad_update", param, hyper, 1)
    if weight_decay != 0:
        g = g + t(weight_decay) * param
    state_sum += g * g
    param -= clr * (g / (np.sqrt(state_sum) + t(eps)))


def nadam_update(
    param: np.ndarray,
    grad: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
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
    hyper: np.ndarray | None = None,
) -> None:
    """NAdam step number ``step`` (1-based) in place (PyTorch semantics); ``mu``/``mu_next``
    are the momentum coefficients of steps ``step``/``step + 1`` and ``mu_product`` the product
    of ``mu`` over steps 1..``step``.

    ``g = grad + wd*p`` (or ``p *= 1 - lr*wd``, decoupled); ``m = b1*m + (1-b1)*g``,
    ``v = b2*v + (1-b2)*g*g``, ``d = sqrt(v/bc2) + eps``; ``p -= coef_g*(g/d)``,
    ``p -= coef_m*(m/d)`` (:func:`gpucnn.backend.checks.nadam_coefficients`). Twin of kernel
    ``nadam_f32/_f64``; with ``hyper`` (``[lr, bc2, coef_g, coef_m]``) of ``nadam_dev_*``.
    """
    t = param.dtype.type
    g = _grad("nadam_update", param, grad)
    bc2, coef_g, coef_m = nadam_coefficients(lr, beta2, mu, mu_next, mu_product, step)
    if hyper is not None:
        lr, bc2, coef_g, coef_m = _hyper("nadam_update", param, hyper, 4)
    if weight_decay != 0:
        if decoupled:
            param *= t(1) - t(lr) * t(weight_decay)
        else:
            g = g + t(weight_decay) * param
    exp_avg *= t(beta1)
    exp_avg += (t(1) - t(beta1)) * g
    exp_avg_sq *= t(beta2)
    exp_avg_sq += (t(1) - t(beta2)) * g * g
    d = np.sqrt(exp_avg_sq / t(bc2)) + t(eps)
    param -= t(coef_g) * (g / d)
    param -= t(coef_m) * (exp_avg / d)
