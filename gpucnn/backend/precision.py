"""Reduced-precision number formats and the GEMM argument checks shared by both backends.

The NumPy twin (:mod:`gpucnn.backend.numpy_ops.gemm`) and the CUDA launcher
(:mod:`gpucnn.backend.cuda_ops.gemm`) validate their arguments here (neither imports the
other). The rounding helpers work on NumPy float32 arrays and mirror the device conversions of
``cuda/mma.cuh`` bit for bit:

- :func:`round_tf32`: round to nearest, ties away from zero, to 10 mantissa bits
  (``cvt.rna.tf32.f32``); inf and NaN pass through.
- :func:`round_bf16`: round to nearest even to 7 mantissa bits (bfloat16), by bit manipulation.
- :func:`round_fp16`: round to nearest even to IEEE binary16 (through ``numpy.float16``).

bfloat16 operands are ``ml_dtypes.bfloat16`` arrays (an optional dependency) or, with an
explicit ``precision="bf16"``, ``uint16`` arrays of bfloat16 bit patterns
(:func:`bf16_bits`, :func:`bf16_bits_to_float32`), so nothing here needs ``ml_dtypes``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "EPILOGUE_ACTIVATIONS",
    "GEMM_PRECISIONS",
    "GemmSpec",
    "bf16_bits",
    "bf16_bits_to_float32",
    "check_conv_precision",
    "check_gemm",
    "dtype_name",
    "epilogue_code",
    "is_bfloat16",
    "round_bf16",
    "round_fp16",
    "round_tf32",
]

#: GEMM precisions: FP32 SIMT; TF32, FP16 and BF16 tensor cores (FP32 accumulate and output).
GEMM_PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
_INT32_MAX = 2**31 - 1


def is_bfloat16(dtype: Any) -> bool:
    """Whether ``dtype`` is ``ml_dtypes.bfloat16`` (recognised by name: no import needed)."""
    try:
        return np.dtype(dtype).name == "bfloat16"
    except TypeError:
        return False


def _bits(x: Any) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)


def round_tf32(x: Any) -> np.ndarray:
    """float32 values rounded to TF32 (ties away from zero), as float32."""
    u = _bits(x)
    special = (u & np.uint32(0x7F800000)) == np.uint32(0x7F800000)
    r = (u + np.uint32(0x1000)) & np.uint32(0xFFFFE000)
    return np.where(special, u, r).astype(np.uint32).view(np.float32)


def round_bf16(x: Any) -> np.ndarray:
    """float32 values rounded to bfloat16 (nearest even), as float32."""
    u = _bits(x)
    with np.errstate(over="ignore"):
        r = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    q = (u & np.uint32(0x80000000)) | np.uint32(0x7FC00000)
    return np.where(nan, q, r).astype(np.uint32).view(np.float32)


def bf16_bits(x: Any) -> np.ndarray:
    """float32 values rounded to bfloat16 (nearest even), as ``uint16`` bit patterns."""
    return (round_bf16(x).view(np.uint32) >> np.uint32(16)).astype(np.uint16)


def bf16_bits_to_float32(u: Any) -> np.ndarray:
    """``uint16`` bfloat16 bit patterns as float32 values (exact)."""
    return (np.asarray(u, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def round_fp16(x: Any) -> np.ndarray:
    """float32 values rounded to binary16 (nearest even), as float32."""
    with np.errstate(over="ignore"):
        return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)


class GemmSpec(NamedTuple):
    """What :func:`check_gemm` found: sizes and the resolved precision."""

    m: int
    n: int
    k: int
    precision: str


_DTYPE_OF = {"fp32": "float32", "tf32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def dtype_name(dt: Any) -> str:
    """``dt``'s name, ``"bfloat16"`` for ``ml_dtypes.bfloat16`` (whose NumPy name varies)."""
    return "bfloat16" if is_bfloat16(dt) else str(np.dtype(dt))


def check_gemm(op: str, a: Any, b: Any, c: Any, beta: float, trans_a: bool, trans_b: bool,
               precision: str | None, bias: Any) -> GemmSpec:  # fmt: skip
    """Validate the arguments of ``gemm``; raise ``TypeError``/``ValueError`` naming ``op``."""
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(
            f"{op}: a and b must be 2-D, got shapes {tuple(a.shape)} and {tuple(b.shape)}"
        )
    da, db = dtype_name(a.dtype), dtype_name(b.dtype)
    supported = (
        "float32 (precision 'fp32' or 'tf32'), float16 ('fp16'), bfloat16 ('bf16'; "
        "ml_dtypes.bfloat16, or uint16 bit patterns with precision='bf16')"
    )
    bits = precision == "bf16" and da == db == "uint16"
    for name in (da, db):
        if name not in ("float32", "float16", "bfloat16") and not bits:
            raise TypeError(f"{op}: no GEMM kernel for dtype {name}; supported: {supported}")
    if da != db:
        raise TypeError(f"{op}: a and b must have the same dtype, got {da} and {db}")
    if precision is None:
        precision = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}[da]
    if precision not in GEMM_PRECISIONS:
        raise ValueError(
            f"{op}: unknown precision {precision!r}; expected one of {', '.join(GEMM_PRECISIONS)}"
        )
    if _DTYPE_OF[precision] != da and not bits:
        raise TypeError(
            f"{op}: precision {precision!r} takes {_DTYPE_OF[precision]} inputs, got {da}; "
            f"supported: {supported}"
        )
    m, ka = (a.shape[1], a.shape[0]) if trans_a else (a.shape[0], a.shape[1])
    kb, n = (b.shape[1], b.shape[0]) if trans_b else (b.shape[0], b.shape[1])
    if ka != kb:
        raise ValueError(
            f"{op}: inner sizes differ: op(a) is ({m}, {ka}) and op(b) is ({kb}, {n}) "
            f"(trans_a={bool(trans_a)}, trans_b={bool(trans_b)})"
        )
    if max(a.shape[0], a.shape[1], b.shape[0], b.shape[1]) > _INT32_MAX:
        raise ValueError(f"{op}: every dimension must be below 2**31")
    if c is None:
        if beta != 0:
            raise ValueError(f"{op}: beta={beta} needs c (the matrix it scales)")
    else:
        if tuple(c.shape) != (m, n) or dtype_name(c.dtype) != "float32":
            raise ValueError(
                f"{op}: c must be a float32 array of shape ({m}, {n}), got "
                f"{dtype_name(c.dtype)} {tuple(c.shape)}"
            )
        if not c.flags.c_contiguous:
            raise ValueError(f"{op}: c is written in place and must be C-contiguous")
    if bias is not None and tuple(bias.shape) != (n,):
        raise ValueError(f"{op}: bias must have shape ({n},), got {tuple(bias.shape)}")
    return GemmSpec(int(m), int(n), int(ka), precision)


#: Activations the kernels' epilogues fuse, with their code in ``cuda/epilogue.cuh``.
EPILOGUE_ACTIVATIONS = {None: 0, "relu": 1, "leaky_relu": 2, "gelu": 3, "gelu_tanh": 4}


def epilogue_code(op: str, activation: str | None, relu: bool = False) -> int:
    """The ``cuda/epilogue.cuh`` code of ``activation`` (``relu=True``: gemm's older spelling
    of ``activation="relu"``); ``ValueError`` naming ``op`` for an unknown one or for two."""
    if activation not in EPILOGUE_ACTIVATIONS:
        names = ", ".join(repr(a) for a in EPILOGUE_ACTIVATIONS)
        raise ValueError(f"{op}: unknown activation {activation!r}; expected one of {names}")
    if relu and activation not in (None, "relu"):
        raise ValueError(f"{op}: relu=True and activation={activation!r} are two activations")
    return EPILOGUE_ACTIVATIONS["relu" if relu else activation]


def check_conv_precision(op: str, precision: str | None, **arrays: Any) -> str:
    """The precision of an implicit-GEMM convolution (``"simt"`` for ``None``) after checking
    every array of ``arrays`` (name -> array) takes it: ``TypeError`` naming ``op``, the
    precision and the dtype given otherwise; ``ValueError`` for an unknown precision."""
    if precision is None:
        return "simt"
    if precision not in GEMM_PRECISIONS:
        raise ValueError(f"{op}: unknown precision {precision!r}; expected None or one of "
                         f"{', '.join(GEMM_PRECISIONS)}")  # fmt: skip
    want = _DTYPE_OF[precision]
    for name, a in arrays.items():
        got = dtype_name(a.dtype)
        if got != want and not (precision == "bf16" and got == "uint16"):
            extra = " (ml_dtypes.bfloat16, or uint16 bit patterns)" if precision == "bf16" else ""
            raise TypeError(f"{op}: precision {precision!r} takes {want} inputs{extra}, got "
                            f"{name} of dtype {got}")  # fmt: skip
    return precision
