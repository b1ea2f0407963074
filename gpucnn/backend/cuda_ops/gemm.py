"""GEMM on the GPU with our own kernels: launchers for ``cuda/gemm.cu``.

Same names and signatures as :mod:`gpucnn.backend.numpy_ops.gemm`. Precisions: ``fp32``
(SIMT), ``tf32`` (float32 inputs rounded to TF32, ``mma.m16n8k8``), ``fp16`` and ``bf16``
(16-bit inputs, ``mma.m16n8k16``), all with FP32 accumulation and FP32 output. Not used by the
layers yet (cuBLAS stays their GEMM until a GPU measurement says otherwise): a backend
primitive, e.g. for graph-captured steps, where cuBLAS cannot run.

Tile shapes are compile-time defines of ``cuda/gemm.cu``; :data:`SIMT_TILE` and
:data:`TC_TILE` hold the ones the launcher compiles with (tests swap them to sweep tiles).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucnn.backend.precision import check_gemm, epilogue_code
from gpucnn.backend.runtime import MAX_GRID, current_runtime

__all__ = ["gemm"]

_FAMILY = "gemm"
_KERNELS = {"fp32": "gemm_f32_simt", "tf32": "gemm_tf32_tc", "fp16": "gemm_f16_tc",
            "bf16": "gemm_bf16_tc"}  # fmt: skip

#: Defines of the FP32 SIMT kernel: block tile BM x BN x BK, thread patch TM x TN.
SIMT_TILE = {"GEMM_BM": 64, "GEMM_BN": 64, "GEMM_BK": 8, "GEMM_TM": 4, "GEMM_TN": 4}
#: Defines of the tensor-core kernels: WARPS_M x WARPS_N warps of WM x WN each, BK deep.
TC_TILE = {"GEMM_TC_WARPS_M": 2, "GEMM_TC_WARPS_N": 2, "GEMM_TC_WM": 32, "GEMM_TC_WN": 32,
           "GEMM_TC_BK": 32}  # fmt: skip


def _launch_shape(precision: str) -> tuple[dict, int, int, int]:
    """(defines, threads per block, block tile rows, block tile columns) of ``precision``."""
    if precision == "fp32":
        t = dict(SIMT_TILE)
        threads = (t["GEMM_BM"] // t["GEMM_TM"]) * (t["GEMM_BN"] // t["GEMM_TN"])
        return t, threads, t["GEMM_BM"], t["GEMM_BN"]
    t = dict(TC_TILE)
    wm, wn = t["GEMM_TC_WARPS_M"], t["GEMM_TC_WARPS_N"]
    return t, 32 * wm * wn, wm * t["GEMM_TC_WM"], wn * t["GEMM_TC_WN"]


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
) -> Any:
    """``act(alpha * op(a) @ op(b) + beta * c (+ bias[n]))``, float32 (M, N).

    ``op(x)`` is ``x.T`` when ``trans_x``. ``precision``: ``"fp32"`` or ``"tf32"`` for float32
    inputs, ``"fp16"`` for float16, ``"bf16"`` for ``ml_dtypes.bfloat16`` (or ``uint16``
    bfloat16 bit patterns, with ``precision="bf16"`` given); ``None`` picks by
    dtype (float32 -> ``"fp32"``). ``c`` (float32, C-contiguous, (M, N)) is written IN PLACE and
    returned when given; ``beta != 0`` needs it. ``bias`` has shape (N,); ``relu`` clamps at 0
    (the same as ``activation="relu"``); ``activation`` is one of
    :data:`gpucnn.backend.precision.EPILOGUE_ACTIVATIONS`
    (``slope``: LeakyReLU's negative slope), fused into the kernels' epilogue.

    Kernels ``gemm_f32_simt`` / ``gemm_tf32_tc`` / ``gemm_f16_tc`` / ``gemm_bf16_tc``: one
    block per output tile (a tile-stride loop, so any grid is correct), k tiles staged in
    shared memory with zero-filled tails.
    """
    spec = check_gemm("gemm", a, b, c, beta, trans_a, trans_b, precision, bias)
    act = epilogue_code("gemm", activation, relu)
    rt = current_runtime()
    xp = rt.xp
    m, n, k = spec.m, spec.n, spec.k
    out = c if c is not None else xp.empty((m, n), dtype=np.float32)
    if m == 0 or n == 0:
        return out
    ac, bc = xp.ascontiguousarray(a), xp.ascontiguousarray(b)
    if spec.precision in ("fp16", "bf16"):  # the kernels take raw 16-bit patterns
        ac, bc = ac.view(np.uint16), bc.view(np.uint16)
    bias_arr = (
        xp.zeros((1,), dtype=np.float32)
        if bias is None
        else xp.ascontiguousarray(bias, dtype=np.float32)
    )
    epilogue = (1 if bias is not None else 0) | (act << 1)
    defines, threads, bm, bn = _launch_shape(spec.precision)
    tiles = -(-m // bm) * -(-n // bn)
    cap = MAX_GRID if rt.grid_cap is None else int(rt.grid_cap)
    grid = max(1, min(tiles, cap))
    kern = rt.kernel(_FAMILY, _KERNELS[spec.precision], defines)
    kern(
        (grid,),
        (threads,),
        (
            ac, bc, bias_arr, out,
            np.int32(m), np.int32(n), np.int32(k),
            np.int32(a.shape[1]), np.int32(b.shape[1]), np.int32(n),
            np.int32(bool(trans_a)), np.int32(bool(trans_b)),
            np.float32(alpha), np.float32(beta), np.int32(epilogue), np.float32(slope),
        ),
    )  # fmt: skip
    return out
