"""Automatic mixed precision: :class:`autocast` and the ``Model.compile(mixed_precision=...)``
policy.

Semantics (PyTorch's ``torch.autocast``): inside ``with autocast(dtype):`` the GEMM-class ops
:func:`~gpucnn.functional.conv2d` (every stride/padding/dilation/groups form, so grouped and
depthwise convolutions too), :func:`~gpucnn.functional.linear` and
:func:`~gpucnn.functional.matmul` (and ``a @ b``) cast their float32 inputs (activations,
weights AND bias) to ``dtype`` and compute with FP32 accumulation; their outputs are
``dtype`` values. Everything else (softmax, log_softmax, the losses, batch-norm statistics,
sum/mean, element-wise ops) computes in float32 on the values it receives, as torch's
"autocast to float32" ops do. Operands that are not all float32 (float64) are left alone, as
torch leaves float64. ``autocast(enabled=False)`` inside turns it off for its block.

Representation: "FP16/BF16 values in FP32 storage". The kernels of both backends exist for
float32/float64 only, so a low-precision tensor is a float32 array whose values are exactly
representable in ``dtype`` (no float16/bfloat16 arrays are made). Exactly what is rounded
where, identically on the NumPy and the CUDA backend:

* forward: each float32 operand of a GEMM-class op (input, weight, bias) is rounded to
  ``dtype`` (round to nearest even; :func:`~gpucnn.backend.precision.round_fp16` /
  :func:`~gpucnn.backend.precision.round_bf16` on NumPy arrays, the same bit operations on
  device arrays); the op then runs its ordinary float32 path (cuBLAS / our im2col + GEMM /
  NumPy): the product of two fp16 (11-bit) or bf16 (8-bit significand) values is exact in
  float32, so this IS FP32 accumulation of the low-precision products (``be.gemm`` with
  ``precision="fp16"/"bf16"`` is not used: the float32 path computes the same sums and also
  covers the convolutions and the batched matmuls); the bias is added in float32 and the
  op's output is rounded to ``dtype`` once. On CUDA the convolutions go further: their
  rounded operands go to the tensor-core implicit-GEMM kernels as 16-bit patterns
  (``conv_igemm_tc_*``, ``mma.sync`` on sm_80+; forward, backward-data and backward-weight),
  the same exact products summed in FP32 in another order. Values beyond the format's range
  become inf (fp16 overflows above 65504), as a real cast does.
* backward: the casts are differentiable ops whose backward returns the gradient in the
  source dtype (float32), rounded to ``dtype`` as torch's low-precision gradients are: the
  gradient entering the op's output and the gradients it produces for its operands (the
  weight gradients the FP32 master weights receive are float32 arrays holding ``dtype``
  values). So float16 gradients underflow and overflow as on a device, which is what the
  loss scaling of :class:`~gpucnn.amp.GradScaler` is for.

Not done (yet): casts of weights are not cached within a region (each forward rounds the
weights again); ops outside the GEMM class keep float32 outputs (torch would keep e.g. an
element-wise add of two bf16 tensors in bf16); dense layers and matmul stay on the float32
path (cuBLAS), not on our tensor-core GEMM, until a GPU measurement says which is faster.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from gpucnn.backend.precision import round_bf16, round_fp16
from gpucnn.tensor import Context, Function, Tensor

__all__ = [
    "AUTOCAST_DTYPES",
    "MIXED_PRECISION_POLICIES",
    "autocast",
    "check_mixed_precision_supported",
    "device_capability",
    "get_autocast_dtype",
    "is_autocast_enabled",
    "resolve_policy",
    "round_to",
]

#: The low-precision dtypes of :class:`autocast`.
AUTOCAST_DTYPES = ("float16", "bfloat16")

#: ``compile(mixed_precision=...)`` values (Keras's policy names too) -> the autocast dtype.
MIXED_PRECISION_POLICIES: dict[str | None, str | None] = {
    None: None,
    "float32": None,
    "float16": "float16",
    "bfloat16": "bfloat16",
    "mixed_float16": "float16",
    "mixed_bfloat16": "bfloat16",
}

#: The minimum CUDA compute capability with tensor cores for each dtype.
MIN_CAPABILITY = {"float16": (7, 0), "bfloat16": (8, 0)}

_F = TypeVar("_F", bound=Callable[..., Any])
_local = threading.local()


def _dtype_name(dtype: Any) -> str:
    """``"float16"``/``"bfloat16"`` for the accepted spellings, else a ``ValueError``."""
    name: Any = dtype
    if not isinstance(dtype, str):
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = getattr(dtype, "__name__", repr(dtype))
    if name not in AUTOCAST_DTYPES:
        raise ValueError(
            f"autocast: dtype must be one of {', '.join(AUTOCAST_DTYPES)} (numpy.float16 and "
            f"ml_dtypes.bfloat16 are accepted too), got {dtype!r}"
        )
    return str(name)


def get_autocast_dtype() -> str | None:
    """The dtype of the innermost enabled :class:`autocast` region (``"float16"`` or
    ``"bfloat16"``), or None outside one (or inside ``autocast(enabled=False)``)."""
    return getattr(_local, "dtype", None)


def is_autocast_enabled() -> bool:
    """Whether GEMM-class ops autocast here (this thread)."""
    return get_autocast_dtype() is not None


class autocast:  # noqa: N801 - torch's name
    """Context manager (and decorator) running the GEMM-class ops in ``dtype``.

    Args:
        dtype: ``"float16"`` (default, as ``torch.autocast("cuda")``) or ``"bfloat16"``
            (``numpy.float16`` / ``ml_dtypes.bfloat16`` accepted).
        enabled: ``False`` disables autocasting inside the block (nested regions restore the
            outer state on exit).

    Raises:
        ValueError: another dtype.
        TypeError: ``enabled`` not a bool.

    The state is per thread, as torch's. See the module doc for what is rounded where.
    """

    def __init__(self, dtype: Any = "float16", enabled: bool = True) -> None:
        if not isinstance(enabled, (bool, np.bool_)):
            raise TypeError(f"autocast: enabled must be a bool, got {type(enabled).__name__}")
        self.dtype = _dtype_name(dtype)
        self.enabled = bool(enabled)
        self._prev: list[str | None] = []

    def __enter__(self) -> autocast:
        self._prev.append(get_autocast_dtype())
        _local.dtype = self.dtype if self.enabled else None
        return self

    def __exit__(self, *exc: Any) -> None:
        _local.dtype = self._prev.pop()

    def __call__(self, fn: _F) -> _F:
        """Decorate ``fn`` so that each call runs inside this region."""

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with autocast(self.dtype, self.enabled):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"autocast(dtype={self.dtype!r}, enabled={self.enabled})"


# ----------------------------------------------------------------------------- rounding


def round_to(a: Any, dtype: str) -> Any:
    """float32 array ``a`` (NumPy or device) with its values rounded to ``dtype``
    (``"float16"``/``"bfloat16"``, nearest even), still float32; NumPy arrays go through
    :mod:`gpucnn.backend.precision`, device arrays through the same bit operations."""
    if isinstance(a, np.ndarray):
        return round_fp16(a) if dtype == "float16" else round_bf16(a)
    from gpucnn.backend.device import array_module

    xp = array_module(a)
    if dtype == "float16":
        with np.errstate(over="ignore"):  # overflow to inf is the cast's result, not an error
            return a.astype(xp.float16).astype(xp.float32)
    u = xp.ascontiguousarray(a, dtype=xp.float32).view(xp.uint32)
    r = (u + xp.uint32(0x7FFF) + ((u >> xp.uint32(16)) & xp.uint32(1))) & xp.uint32(0xFFFF0000)
    nan = (u & xp.uint32(0x7FFFFFFF)) > xp.uint32(0x7F800000)
    q = (u & xp.uint32(0x80000000)) | xp.uint32(0x7FC00000)
    return xp.where(nan, q, r).astype(xp.uint32).view(xp.float32)


class _Round(Function):
    """The autocast cast: values rounded to the low dtype (float32 storage); the backward
    returns the gradient as float32, rounded the same way (a low-precision gradient)."""

    @staticmethod
    def forward(ctx: Context, a: Any, dtype: str) -> Any:
        ctx.dtype = dtype
        return round_to(a, dtype)

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        return round_to(g, ctx.dtype)


def active_dtype(*tensors: Tensor | None) -> str | None:
    """The autocast dtype for an op on ``tensors`` (None entries ignored): the region's dtype
    when autocast is on and every one of them is float32, else None (the hook of the
    GEMM-class ops)."""
    dtype = getattr(_local, "dtype", None)
    if dtype is None:
        return None
    for t in tensors:
        if t is not None and t.dtype != np.float32:
            return None
    return dtype


def cast(t: Tensor | None, dtype: str) -> Tensor | None:
    """``t`` rounded to ``dtype`` through the differentiable cast (None stays None)."""
    return None if t is None else _Round.apply(t, dtype)


# ----------------------------------------------------------------------------- policies


def resolve_policy(value: Any, where: str = "compile(mixed_precision=...)") -> str | None:
    """The autocast dtype of a ``mixed_precision`` value (None: full float32).

    Raises:
        ValueError: an unknown value (the message lists the supported ones).
    """
    if isinstance(value, str) and value in MIXED_PRECISION_POLICIES:
        return MIXED_PRECISION_POLICIES[value]
    if value is None:
        return None
    names = ", ".join(repr(k) for k in MIXED_PRECISION_POLICIES)
    raise ValueError(f"{where}: unknown mixed precision policy {value!r}; supported: {names}")


def check_mixed_precision_supported(
    dtype: str, capability: tuple[int, int] | None, where: str = "mixed_precision"
) -> None:
    """Refuse ``dtype`` (``"float16"``/``"bfloat16"``) on a CUDA device of compute
    ``capability`` ``(major, minor)`` without its tensor cores (float16 needs 7.0, bfloat16
    8.0); ``capability=None`` (the NumPy backend) accepts both.

    Raises:
        ValueError: naming ``where``, the dtype, the device's capability and what it supports.
    """
    dtype = _dtype_name(dtype)
    if capability is None:
        return
    cap = (int(capability[0]), int(capability[1]))
    need = MIN_CAPABILITY[dtype]
    if cap < need:
        ok = [d for d in AUTOCAST_DTYPES if cap >= MIN_CAPABILITY[d]]
        supported = ", ".join(ok) if ok else "none (use float32: mixed_precision=None)"
        raise ValueError(
            f"{where}={dtype!r}: the CUDA device has compute capability {cap[0]}.{cap[1]}, but "
            f"{dtype} needs tensor cores of compute capability {need[0]}.{need[1]} or newer; "
            f"this device supports: {supported}"
        )


def device_capability() -> tuple[int, int]:
    """The compute capability ``(major, minor)`` of the current CUDA device (the simulated
    device reports its own)."""
    from gpucnn.backend.device import compute_capability

    return compute_capability()
