"""Activations on the GPU: launchers for ``cuda/activation.cu``.

Same names and signatures as :mod:`gpucnn.backend.numpy_ops.activation`. CuPy is reached only
through :func:`~gpucnn.backend.runtime.current_runtime` (the host emulator swaps in NumPy).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucnn.backend.runtime import current_runtime, dtype_suffix

__all__ = [
    "activation_forward",
    "activation_backward",
    "prelu_forward",
    "prelu_backward",
]

_FAMILY = "activation"
_KINDS = ("relu", "leaky_relu", "elu", "sigmoid", "tanh", "gelu", "gelu_tanh")
_MAX_BLOCK = 1024  # ACT_MAX_BLOCK: size of the shared buffer of prelu_bwd_dw


def _check_kind(kind: str) -> None:
    if kind not in _KINDS:
        raise ValueError(f"activation: unknown kind {kind!r}; valid kinds are {', '.join(_KINDS)}")


def _scalar(dtype: Any, v: float) -> Any:
    return np.dtype(dtype).type(v)


def activation_forward(x: Any, kind: str, param: float = 0.0) -> Any:
    """``y = f(x)`` element-wise (see the NumPy twin). Kernel ``<kind>_fwd_f32/_f64``:
    one thread per element, grid-stride."""
    _check_kind(kind)
    rt = current_runtime()
    xp = rt.xp
    xc = xp.ascontiguousarray(x)
    y = xp.empty_like(xc)
    n = int(xc.size)
    rt.launch(
        _FAMILY,
        f"{kind}_fwd_{dtype_suffix(xc.dtype, kind)}",
        n,
        (xc, y, _scalar(xc.dtype, param), np.int64(n)),
    )
    return y


def activation_backward(saved: Any, g: Any, kind: str, param: float = 0.0) -> Any:
    """``dx = g * f'`` from ``saved`` (the output y for sigmoid/tanh, else the input x).
    Kernel ``<kind>_bwd_f32/_f64``: one thread per element, grid-stride."""
    _check_kind(kind)
    rt = current_runtime()
    xp = rt.xp
    sc = xp.ascontiguousarray(saved)
    gc = xp.ascontiguousarray(g, dtype=sc.dtype)
    if gc.shape != sc.shape:
        raise ValueError(
            f"activation_backward: grad shape {tuple(gc.shape)} != saved shape {tuple(sc.shape)}"
        )
    dx = xp.empty_like(sc)
    n = int(sc.size)
    rt.launch(
        _FAMILY,
        f"{kind}_bwd_{dtype_suffix(sc.dtype, kind)}",
        n,
        (sc, gc, dx, _scalar(sc.dtype, param), np.int64(n)),
    )
    return dx


def _prelu_view(op: str, x: Any, w: Any) -> tuple[int, int, int]:
    c = int(w.size)
    if w.ndim != 1:
        raise ValueError(f"{op}: weight must be 1-D (1,) or (C,), got shape {tuple(w.shape)}")
    if c == 1:
        return 1, 1, int(x.size)
    if x.ndim < 2 or x.shape[1] != c:
        raise ValueError(
            f"{op}: weight has {c} channels but the input {tuple(x.shape)} has "
            f"{x.shape[1] if x.ndim >= 2 else 'no'} channels on axis 1"
        )
    n = int(x.shape[0])
    s = int(x.size) // max(n * c, 1)
    return n, c, s


def prelu_forward(x: Any, w: Any) -> Any:
    """``y = x if x > 0 else w[c] * x`` (w (1,) or (C,) on axis 1). Kernel ``prelu_fwd``:
    one thread per element, grid-stride."""
    rt = current_runtime()
    xp = rt.xp
    xc = xp.ascontiguousarray(x)
    wc = xp.ascontiguousarray(w, dtype=xc.dtype)
    _, c, s = _prelu_view("prelu_forward", xc, wc)
    y = xp.empty_like(xc)
    n = int(xc.size)
    rt.launch(
        _FAMILY,
        f"prelu_fwd_{dtype_suffix(xc.dtype, 'prelu_fwd')}",
        n,
        (xc, wc, y, np.int64(n), np.int64(c), np.int64(s)),
    )
    return y


def prelu_backward(x: Any, w: Any, g: Any) -> tuple[Any, Any]:
    """``(dx, dw)`` of PReLU. Kernels ``prelu_bwd_dx`` (one thread per element) and
    ``prelu_bwd_dw`` (one block per channel, shared-memory tree reduction, deterministic)."""
    rt = current_runtime()
    xp = rt.xp
    xc = xp.ascontiguousarray(x)
    wc = xp.ascontiguousarray(w, dtype=xc.dtype)
    gc = xp.ascontiguousarray(g, dtype=xc.dtype)
    nb, c, s = _prelu_view("prelu_backward", xc, wc)
    sfx = dtype_suffix(xc.dtype, "prelu_bwd")
    n = int(xc.size)
    dx = xp.empty_like(xc)
    rt.launch(
        _FAMILY,
        f"prelu_bwd_dx_{sfx}",
        n,
        (xc, wc, gc, dx, np.int64(n), np.int64(c), np.int64(s)),
    )
    dw = xp.zeros(c, dtype=xc.dtype)
    if n > 0:
        block = min(rt.block, _MAX_BLOCK)
        grid = rt.grid_for(c, 1)  # one block per channel, capped by grid_cap
        rt.kernel(_FAMILY, f"prelu_bwd_dw_{sfx}")(
            (grid,), (block,), (xc, gc, dw, np.int64(nb), np.int64(c), np.int64(s))
        )
    return dx, dw.reshape(wc.shape)
