"""Dense matrix products of the NumPy backend (twin of :mod:`gpucnn.backend.cuda_ops.linalg`)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["linear_forward_act", "matmul2d"]


def matmul2d(a: np.ndarray, b: np.ndarray, trans_a: bool = False, trans_b: bool = False) -> Any:
    """``op(a) @ op(b)`` of 2-D arrays (``op(x)`` is ``x.T`` when ``trans_x``): (M, K) @ (K, N)
    -> (M, N) in the operands' dtype."""
    return (a.T if trans_a else a) @ (b.T if trans_b else b)


def linear_forward_act(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, kind: str,
                       param: float = 0.0) -> tuple[Any, Any]:  # fmt: skip
    """``(y, act_saved)``: ``y = act(x @ w.T + b)`` for ``x (N, in)``, ``w (out, in)``, ``b
    (out,)`` or None, ``kind`` in :data:`gpucnn.backend.checks.FUSED_ACTIVATIONS`;
    ``act_saved`` is what ``activation_backward`` needs (the pre-activation for gelu, else
    ``y``). Here the product, the bias, then the activation (the CUDA twin fuses them in our
    GEMM's epilogue under ``own_kernels``)."""
    from gpucnn.backend.checks import check_fused_activation
    from gpucnn.backend.numpy_ops.activation import activation_forward

    needs_pre = check_fused_activation("linear_forward_act", kind, param)
    pre = matmul2d(x, w, trans_b=True)
    if b is not None:
        pre += b
    y = activation_forward(pre, kind, param)
    return y, (pre if needs_pre else y)
