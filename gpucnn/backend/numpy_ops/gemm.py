"""GEMM on NumPy: the twin of the kernels in ``cuda/gemm.cu``, emulating their precisions.

Inputs are rounded as the kernels round them (``tf32``: float32 rounded to TF32; ``fp16`` /
``bf16``: the 16-bit inputs, exact in float32), the products are accumulated in float64 and
rounded once to float32, then the epilogue runs in float32 in the kernels' order. The kernels
accumulate in float32 instead, so the two agree within ``K * 2**-24`` relative to
``|op(a)| @ |op(b)|`` (of the rounded inputs), not bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucnn.backend.numpy_ops.activation import activation_forward
from gpucnn.backend.precision import bf16_bits_to_float32, check_gemm, epilogue_code, round_tf32

__all__ = ["gemm"]



def gemm(
    a: Any,
    b: Any,
    c: Any = None,
    alpha: float = 1.0,
    beta: float = 0.0,
    trans_a: bool = False,
    trans_b: bool = False,
    precision: str | None = None,
    bias: Any = None,
    relu: bool = False,
    activation: str | None = None,
    slope: float = 0.01,
) -> np.ndarray:
    """``act(alpha * op(a) @ op(b) + beta * c (+ bias[n]))``, float32 (M, N).

    ``op(x)`` is ``x.T`` when ``trans_x``. ``precision``: ``"fp32"`` or ``"tf32"`` for float32
    inputs, ``"fp16"`` for float16, ``"bf16"`` for ``ml_dtypes.bfloat16`` (or ``uint16``
    bfloat16 bit patterns, with ``precision="bf16"`` given); ``None`` picks by
    dtype (float32 -> ``"fp32"``). ``c`` (float32, C-contiguous, (M, N)) is written IN PLACE and
    returned when given; ``beta != 0`` needs it. ``bias`` has shape (N,); ``relu`` clamps at 0
    (``activation="relu"``: the same); ``activation`` ``"leaky_relu"`` (``slope``), ``"gelu"``
    or ``"gelu_tanh"`` runs :func:`~gpucnn.backend.numpy_ops.activation.activation_forward`
    in float32 after the bias, as the kernels' epilogue.
    Twin of ``gemm_f32_simt`` / ``gemm_tf32_tc`` / ``gemm_f16_tc`` / ``gemm_bf16_tc``.
    """
    spec = check_gemm("gemm", a, b, c, beta, trans_a, trans_b, precision, bias)
    epilogue_code("gemm", activation, relu)
    relu = relu or activation == "relu"
    oa = np.asarray(a).T if trans_a else np.asarray(a)
    ob = np.asarray(b).T if trans_b else np.asarray(b)
    if oa.dtype == np.uint16:  # bfloat16 bit patterns (precision="bf16")
        fa, fb = bf16_bits_to_float32(oa), bf16_bits_to_float32(ob)
    else:
        fa, fb = oa.astype(np.float32), ob.astype(np.float32)
    if spec.precision == "tf32":
        fa, fb = round_tf32(fa), round_tf32(fb)
    acc = (fa.astype(np.float64) @ fb.astype(np.float64)).astype(np.float32)
    v = np.float32(alpha) * acc
    if beta != 0:
        v = v + np.float32(beta) * c
    if bias is not None:
        v = v + np.asarray(bias, dtype=np.float32)
    if relu:
        v = np.where(v > 0, v, np.float32(0))
    elif activation is not None:
        v = activation_forward(np.asarray(v, dtype=np.float32), activation, slope)
    v = v.astype(np.float32, copy=False)
    if c is not None:
        c[...] = v
        return c
    return v
