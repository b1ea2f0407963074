"""Dense matrix products of the CUDA backend: cuBLAS through CuPy, or our GEMM kernels.

:func:`matmul2d` is the product dense layers use (``linear`` forward and backward). It runs
cuBLAS (``xp.matmul``) by default and our ``cuda/gemm.cu`` (FP32 SIMT, :mod:`.gemm`) under
:func:`gpucnn.backend.runtime.own_kernels` and whenever the current stream is being captured
into a CUDA graph, where CuPy refuses cuBLAS (cupy/cupy#6290). Which is faster per shape is
for a GPU measurement to say (``python -m benchmarks.run --device cuda --only gemm``); until
then eager code keeps cuBLAS.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucnn.backend.cuda_ops.gemm import gemm
from gpucnn.backend.runtime import current_runtime, own_kernels_active

__all__ = ["linear_forward_act", "matmul2d"]


def stream_capturing(xp: Any) -> bool:
    """Whether the current CUDA stream is being captured into a graph."""
    cuda = getattr(xp, "cuda", None)
    if cuda is None:  # the host emulator's runtime (xp = NumPy)
        return False
    return bool(cuda.get_current_stream().is_capturing())


def matmul2d(a: Any, b: Any, trans_a: bool = False, trans_b: bool = False) -> Any:
    """``op(a) @ op(b)`` of 2-D arrays (``op(x)`` is ``x.T`` when ``trans_x``): (M, K) @ (K, N)
    -> (M, N) in the operands' dtype.

    Raises:
        TypeError: inside a graph capture with a dtype our GEMM lacks (float32 only).
    """
    xp = current_runtime().xp
    ours = own_kernels_active() or stream_capturing(xp)
    if ours and a.dtype == np.float32 and b.dtype == np.float32:
        return gemm(a, b, trans_a=bool(trans_a), trans_b=bool(trans_b), precision="fp32")
    if ours and stream_capturing(xp):
        raise TypeError(
            f"matmul2d: a CUDA graph capture needs our GEMM kernel, which takes float32; got "
            f"{a.dtype} and {b.dtype} (cuBLAS is refused during capture); use float32"
        )
    return xp.matmul(a.T if trans_a else a, b.T if trans_b else b)


def linear_forward_act(x: Any, w: Any, b: Any, kind: str, param: float = 0.0) -> tuple[Any, Any]:
    """``(y, act_saved)``: ``y = act(x @ w.T + b)`` (see the NumPy twin). Where
    :func:`matmul2d` runs our GEMM (``own_kernels``, graph capture) and the backward needs no
    pre-activation (relu, leaky relu), bias and activation are applied in the GEMM's epilogue
    (``gemm_f32_simt`` with ``epilogue`` bias + act); otherwise product, bias and activation
    kernel follow one another."""
    from gpucnn.backend.checks import check_fused_activation
    from gpucnn.backend.cuda_ops.activation import activation_forward

    needs_pre = check_fused_activation("linear_forward_act", kind, param)
    xp = current_runtime().xp
    ours = own_kernels_active() or stream_capturing(xp)
    if ours and not needs_pre and x.dtype == np.float32 and w.dtype == np.float32:
        y = gemm(x, w, trans_b=True, precision="fp32", bias=b, activation=kind,
                 slope=float(param))  # fmt: skip
        return y, y
    pre = matmul2d(x, w, trans_b=True)
    if b is not None:
        pre += b
    y = activation_forward(pre, kind, param)
    return y, (pre if needs_pre else y)
