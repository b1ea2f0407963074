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

__all__ = ["matmul2d"]


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
