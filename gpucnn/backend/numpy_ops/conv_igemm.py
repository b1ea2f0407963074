"""NumPy twins of the implicit-GEMM convolution kernels (:mod:`gpucnn.backend.cuda_ops.conv_igemm`).

The CUDA kernels compute, per group, the GEMMs of im2col + GEMM without building the column
matrix; their twins are the readable reference route itself
(:mod:`gpucnn.backend.numpy_ops.conv.reference`), so emulator parity tests compare the kernels
with it. Same names and signatures as the CUDA launchers.
"""

from __future__ import annotations

import numpy as np

from gpucnn.backend.geometry import Conv2dGeometry
from gpucnn.backend.numpy_ops.conv import reference

__all__ = ["conv2d_igemm_forward", "conv2d_igemm_backward_data", "conv2d_igemm_backward_weight"]


def conv2d_igemm_forward(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, geom: Conv2dGeometry
) -> np.ndarray:
    """``y (N, O, oh, ow)``: the reference forward (``bias`` added when given)."""
    x, weight = np.ascontiguousarray(x), np.ascontiguousarray(weight, dtype=x.dtype)
    return reference.forward(x, weight, bias, geom)[0]


def conv2d_igemm_backward_data(
    dy: np.ndarray, weight: np.ndarray, geom: Conv2dGeometry
) -> np.ndarray:
    """``dx (N, C, H, W)``: the reference input gradient (its col2im path)."""
    dy, weight = np.ascontiguousarray(dy), np.ascontiguousarray(weight, dtype=dy.dtype)
    return reference.backward(dy, None, weight, geom, True, False, "col2im")[0]


def conv2d_igemm_backward_weight(
    dy: np.ndarray, x: np.ndarray, geom: Conv2dGeometry, splits: int | None = None
) -> np.ndarray:
    """``dW (O, C/groups, kh, kw)``: the reference weight gradient (``splits``, the CUDA
    kernel's split-K count, does not change the result)."""
    dy = np.ascontiguousarray(dy)
    cols = reference.columns(np.ascontiguousarray(x, dtype=dy.dtype), geom)
    return reference.backward(dy, cols, None, geom, False, True)[1]
