"""NumPy twins of the implicit-GEMM convolution kernels (:mod:`gpucnn.backend.cuda_ops.conv_igemm`).

The CUDA kernels compute, per group, the GEMMs of im2col + GEMM without building the column
matrix; their twins are the readable reference route itself
(:mod:`gpucnn.backend.numpy_ops.conv.reference`), so emulator parity tests compare the kernels
with it. Same names and signatures as the CUDA launchers.

``precision`` ``"tf32"`` / ``"fp16"`` / ``"bf16"`` (the tensor-core kernels of
``cuda/conv_igemm_tc.cu``): the inputs are rounded exactly as the device rounds them
(:mod:`gpucnn.backend.precision`), the reference runs in float64 on those values and the result
is float32; the forward epilogue (bias, then the activation of
:func:`gpucnn.backend.numpy_ops.activation.activation_forward`) runs in float32, as on the
device. ``None`` keeps the input dtype (float32 or float64), ``"fp32"`` takes float32 only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucnn.backend.geometry import Conv2dGeometry
from gpucnn.backend.numpy_ops.activation import activation_forward
from gpucnn.backend.numpy_ops.conv import reference
from gpucnn.backend.precision import (
    bf16_bits_to_float32,
    check_conv_precision,
    dtype_name,
    epilogue_code,
    round_tf32,
)

__all__ = ["conv2d_igemm_forward", "conv2d_igemm_backward_data", "conv2d_igemm_backward_weight"]



def _check_dtype(op: str, a: np.ndarray) -> None:
    """The SIMT kernels' dtypes (as ``runtime.dtype_suffix``): float32 or float64."""
    if np.dtype(a.dtype) not in (np.float32, np.float64):
        raise TypeError(f"{op}: the CUDA backend has no kernel for dtype {dtype_name(a.dtype)}; "
                        "expected float32 or float64")  # fmt: skip


def _rounded(a: np.ndarray, precision: str) -> np.ndarray:
    """``a`` as the tensor-core kernels see it (TF32-rounded / 16-bit values), as float64."""
    if precision == "tf32":
        v = round_tf32(a)
    elif precision == "bf16" and dtype_name(a.dtype) == "uint16":
        v = bf16_bits_to_float32(a)
    else:  # float16 and ml_dtypes.bfloat16 convert to float32 exactly
        v = np.asarray(a).astype(np.float32)
    return np.ascontiguousarray(v, dtype=np.float64)


def conv2d_igemm_forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    geom: Conv2dGeometry,
    *,
    precision: str | None = None,
    activation: str | None = None,
    slope: float = 0.01,
    return_preactivation: bool = False,
) -> Any:
    """``y (N, O, oh, ow) = act(conv(x, weight) + bias)``: the reference forward, then the
    epilogue (see the module docstring). ``(y, pre)`` with ``return_preactivation``."""
    op = "conv2d_igemm_forward"
    prec = check_conv_precision(op, precision, x=x, weight=weight)
    epilogue_code(op, activation)
    if prec in ("simt", "fp32"):
        _check_dtype(op, x)
        x, weight = np.ascontiguousarray(x), np.ascontiguousarray(weight, dtype=x.dtype)
        pre = reference.forward(x, weight, bias, geom)[0]
    else:
        pre = reference.forward(_rounded(x, prec), _rounded(weight, prec), None, geom)[0]
        pre = np.ascontiguousarray(pre, dtype=np.float32)
        if bias is not None:
            pre = pre + np.asarray(bias, dtype=np.float32).reshape(1, -1, 1, 1)
    y = pre if activation is None else activation_forward(pre, activation, slope)
    if return_preactivation:
        return y, (pre.copy() if y is pre else pre)
    return y


def conv2d_igemm_backward_data(
    dy: np.ndarray, weight: np.ndarray, geom: Conv2dGeometry, *, precision: str | None = None
) -> np.ndarray:
    """``dx (N, C, H, W)``: the reference input gradient (its col2im path); float32 for the
    tensor-core precisions."""
    op = "conv2d_igemm_backward_data"
    prec = check_conv_precision(op, precision, dy=dy, weight=weight)
    if prec in ("simt", "fp32"):
        _check_dtype(op, dy)
        dy, weight = np.ascontiguousarray(dy), np.ascontiguousarray(weight, dtype=dy.dtype)
        return reference.backward(dy, None, weight, geom, True, False, "col2im")[0]
    dx = reference.backward(_rounded(dy, prec), None, _rounded(weight, prec), geom, True, False,
                            "col2im")[0]  # fmt: skip
    return np.ascontiguousarray(dx, dtype=np.float32)


def conv2d_igemm_backward_weight(
    dy: np.ndarray,
    x: np.ndarray,
    geom: Conv2dGeometry,
    splits: int | None = None,
    *,
    precision: str | None = None,
) -> np.ndarray:
    """``dW (O, C/groups, kh, kw)``: the reference weight gradient (``splits``, the CUDA
    kernel's split-K count, does not change the result); float32 for the tensor-core
    precisions."""
    op = "conv2d_igemm_backward_weight"
    prec = check_conv_precision(op, precision, dy=dy, x=x)
    if prec in ("simt", "fp32"):
        _check_dtype(op, dy)
        dy = np.ascontiguousarray(dy)
        cols = reference.columns(np.ascontiguousarray(x, dtype=dy.dtype), geom)
        return reference.backward(dy, cols, None, geom, False, True)[1]
    cols = reference.columns(_rounded(x, prec), geom)
    dw = reference.backward(_rounded(dy, prec), cols, None, geom, False, True)[1]
    return np.ascontiguousarray(dw, dtype=np.float32)
