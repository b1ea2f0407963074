"""NumPy twins of ``cuda/activation.cu``: element-wise activations and PReLU.

Same names and signatures as :mod:`gpucnn.backend.cuda_ops.activation`. Arrays of any shape;
outputs have the input's shape and dtype. NaN inputs give NaN outputs (PyTorch behaviour).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "activation_forward",
    "activation_backward",
    "prelu_forward",
    "prelu_backward",
]

#: Element-wise activations with a kernel pair; sigmoid and tanh save their OUTPUT for the
#: backward pass, the others their input.
ACTIVATION_KINDS = ("relu", "leaky_relu", "elu", "sigmoid", "tanh", "gelu", "gelu_tanh")

_SQRT1_2 = 0.70710678118654752440
_INV_SQRT_2PI = 0.39894228040143267794
_SQRT_2_OVER_PI = 0.79788456080286535588
_GELU_C = 0.044715


def erf_numpy(x: np.ndarray) -> np.ndarray:
    """Vectorised erf in float64 (max error ~1e-15) without SciPy.

    Taylor series for |x| <= 2 (a loop over 64 terms, not over elements); above, erfc by its
    continued fraction ``exp(-x^2) / sqrt(pi) / (x + (1/2) / (x + (2/2) / (x + ...)))``.
    """
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    small = a <= 2.0
    xs = np.where(small, a, 0.0)
    x2 = xs * xs
    term = xs.copy()
    total = xs.copy()
    for n in range(1, 64):
        term = term * (-x2) / n
        total = total + term / (2 * n + 1)
    res_small = total * (2.0 / np.sqrt(np.pi))
    xl = np.where(small, 4.0, a)
    with np.errstate(invalid="ignore"):
        f = xl.copy()
        for k in range(100, 0, -1):
            f = xl + (k / 2) / f
        res_large = 1.0 - np.exp(-xl * xl) / np.sqrt(np.pi) / f
    res_large = np.where(np.isinf(xl), 1.0, res_large)
    return np.copysign(np.where(small, res_small, res_large), x)


try:  # SciPy is optional (faster); erf_numpy is the fallback
    from scipy.special import erf as _erf  # type: ignore[import-not-found]
except Exception:  # pragma: no cover - depends on the environment
    _erf = erf_numpy


def _erf_like(x: np.ndarray) -> np.ndarray:
    return np.asarray(_erf(x.astype(np.float64)), dtype=np.float64).astype(x.dtype, copy=False)


def _check_kind(kind: str) -> None:
    if kind not in ACTIVATION_KINDS:
        raise ValueError(
            f"activation: unknown kind {kind!r}; valid kinds are {', '.join(ACTIVATION_KINDS)}"
        )


def _zero_where(mask: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``np.where(mask, 0, g)`` (a new array) as a bit mask: ``g``'s bits AND 0 or all-ones.

    Exact (an inf or NaN in ``g`` under the mask still gives +0, unlike ``g * ~mask``) and
    several times faster than ``np.where`` on an unpredictable mask.
    """
    it = np.dtype(f"i{g.itemsize}")
    bits = np.asarray(mask).view(np.int8).astype(it)  # 1 where zeroed, 0 where kept
    bits -= 1  # 0 where zeroed, -1 (all bits set) where kept
    return np.bitwise_and(g.view(it), bits, out=bits).view(g.dtype)


def _slope_factor(pos: np.ndarray, slope: np.generic) -> np.ndarray:
    """``1`` where ``pos`` else ``slope``, in ``slope``'s dtype (a table lookup, no branch)."""
    return np.array([slope, 1], dtype=type(slope)).take(np.asarray(pos).view(np.int8))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp of a non-positive number only: no overflow for large |x|.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def activation_forward(x: Any, kind: str, param: float = 0.0) -> Any:
    """``y = f(x)`` element-wise for ``kind`` in :data:`ACTIVATION_KINDS`.

    ``param`` is the negative slope of ``leaky_relu`` and the alpha of ``elu`` (ignored by the
    others). ``gelu`` is the exact (erf) form, ``gelu_tanh`` the tanh approximation.
    Twin of kernels ``<kind>_fwd_f32/_f64``.
    """
    _check_kind(kind)
    x = np.asarray(x)
    t = x.dtype.type
    p = t(param)
    with np.errstate(over="ignore", invalid="ignore"):
        if kind == "relu":
            y = np.maximum(x, t(0))  # NaN propagates; -0.0 gives +0.0 as np.where did
        elif kind == "leaky_relu":
            # x * 1 or x * slope: bit-identical to np.where(x > 0, x, x * slope), faster.
            y = x * _slope_factor(x > 0, p)
        elif kind == "elu":
            y = np.where(x > 0, x, p * np.expm1(np.minimum(x, t(0))))
            y = np.where(np.isnan(x), x, y)
        elif kind == "sigmoid":
            y = _sigmoid(x)
        elif kind == "tanh":
            y = np.tanh(x)
        elif kind == "gelu":
            y = t(0.5) * x * (t(1) + _erf_like(x * t(_SQRT1_2)))
        else:  # gelu_tanh
            u = t(_SQRT_2_OVER_PI) * (x + t(_GELU_C) * x * x * x)
            y = t(0.5) * x * (t(1) + np.tanh(u))
    return np.asarray(y, dtype=x.dtype, order="C")  # keeps 0-d shapes


def activation_backward(saved: Any, g: Any, kind: str, param: float = 0.0) -> Any:
    """``dx = g * f'(x)`` element-wise.

    ``saved`` is the forward OUTPUT ``y`` for ``sigmoid`` and ``tanh`` and the forward INPUT
    ``x`` for every other kind; ``g`` (same shape) is the upstream gradient.
    Twin of kernels ``<kind>_bwd_f32/_f64``.
    """
    _check_kind(kind)
    s = np.asarray(saved)
    g = np.asarray(g, dtype=s.dtype)
    t = s.dtype.type
    p = t(param)
    with np.errstate(over="ignore", invalid="ignore"):
        if kind == "relu":
            dx = _zero_where(s <= 0, g)  # NaN input passes g through, as PyTorch
        elif kind == "leaky_relu":
            dx = g * _slope_factor(s > 0, p)
        elif kind == "elu":
            dx = np.where(s > 0, g, g * p * np.exp(np.minimum(s, t(0))))
            dx = np.where(np.isnan(s), s, dx)
        elif kind == "sigmoid":
            dx = g * s * (t(1) - s)
        elif kind == "tanh":
            dx = g * (t(1) - s * s)
        elif kind == "gelu":
            cdf = t(0.5) * (t(1) + _erf_like(s * t(_SQRT1_2)))
            pdf = t(_INV_SQRT_2PI) * np.exp(t(-0.5) * s * s)
            dx = g * (cdf + s * pdf)
        else:  # gelu_tanh
            u = t(_SQRT_2_OVER_PI) * (s + t(_GELU_C) * s * s * s)
            th = np.tanh(u)
            du = t(_SQRT_2_OVER_PI) * (t(1) + t(3 * _GELU_C) * s * s)
            dx = g * (t(0.5) * (t(1) + th) + t(0.5) * s * (t(1) - th * th) * du)
    return np.asarray(dx, dtype=s.dtype, order="C")


def _prelu_view(op: str, x: np.ndarray, w: np.ndarray) -> tuple[int, int, int]:
    """(N, C, S) view sizes of ``x`` for a weight of ``w.size`` channels (1 = shared)."""
    c = int(w.size)
    if w.ndim != 1:
        raise ValueError(f"{op}: weight must be 1-D (1,) or (C,), got shape {w.shape}")
    if c == 1:
        return 1, 1, int(x.size)
    if x.ndim < 2 or x.shape[1] != c:
        raise ValueError(
            f"{op}: weight has {c} channels but the input {x.shape} has "
            f"{x.shape[1] if x.ndim >= 2 else 'no'} channels on axis 1"
        )
    n = int(x.shape[0])
    s = int(x.size) // max(n * c, 1)
    return n, c, s


def prelu_forward(x: Any, w: Any) -> Any:
    """``y = x if x > 0 else w[c] * x``; ``w`` is (1,) (shared) or (C,) for channel axis 1.

    Twin of kernel ``prelu_fwd_f32/_f64``.
    """
    x = np.asarray(x)
    w = np.asarray(w, dtype=x.dtype)
    n, c, s = _prelu_view("prelu_forward", x, w)
    x3 = x.reshape(n, c, s)
    y = np.where(x3 > 0, x3, w.reshape(1, c, 1) * x3)
    return np.asarray(y.reshape(x.shape), dtype=x.dtype, order="C")


def prelu_backward(x: Any, w: Any, g: Any) -> tuple[Any, Any]:
    """``(dx, dw)`` of PReLU: ``dx = g if x > 0 else w[c] * g``; ``dw[c] = sum(x * g, x <= 0)``.

    ``dw`` has ``w``'s shape; the sum runs over every axis but the channel axis.
    Twin of kernels ``prelu_bwd_dx_f32/_f64`` and ``prelu_bwd_dw_f32/_f64``.
    """
    x = np.asarray(x)
    w = np.asarray(w, dtype=x.dtype)
    g = np.asarray(g, dtype=x.dtype)
    n, c, s = _prelu_view("prelu_backward", x, w)
    x3 = x.reshape(n, c, s)
    g3 = g.reshape(n, c, s)
    pos = x3 > 0
    dx = np.where(pos, g3, w.reshape(1, c, 1) * g3).reshape(x.shape)
    dw = np.where(pos, x.dtype.type(0), x3 * g3).sum(axis=(0, 2))
    dx = np.asarray(dx, dtype=x.dtype, order="C")
    return dx, dw.astype(x.dtype, copy=False).reshape(w.shape)
