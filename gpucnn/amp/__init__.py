"""Mixed precision: :class:`autocast`, dynamic loss scaling, the ``Model.compile`` policy.

* :class:`autocast` (``torch.autocast`` semantics): inside it conv2d / linear / matmul cast
  their float32 operands to float16 or bfloat16 and compute with FP32 accumulation; the other
  ops stay float32. Low-precision values are held in float32 storage ("FP16/BF16 values in
  FP32 storage", rounded at the op boundaries: :mod:`gpucnn.amp.autocast_mode` says exactly where).
  :func:`is_autocast_enabled`, :func:`get_autocast_dtype`.
* :class:`GradScaler` (``torch.amp.GradScaler``'s semantics and defaults: initial scale
  2**16, growth 2 after 2000 clean steps, backoff 0.5, the optimizer step skipped on inf/NaN
  gradients).
* ``Model.compile(mixed_precision="float16"|"bfloat16"|"mixed_float16"|"mixed_bfloat16")``:
  fit/evaluate/predict run the forward under :class:`autocast` (FP32 master weights, the
  loss in float32); float16 adds a :class:`GradScaler` (``model.loss_scaler``).
"""

from gpucnn.amp.autocast_mode import (
    AUTOCAST_DTYPES,
    MIXED_PRECISION_POLICIES,
    autocast,
    check_mixed_precision_supported,
    device_capability,
    get_autocast_dtype,
    is_autocast_enabled,
    resolve_policy,
    round_to,
)
from gpucnn.amp.scaler import GradScaler, OptState

__all__ = [
    "AUTOCAST_DTYPES",
    "MIXED_PRECISION_POLICIES",
    "GradScaler",
    "OptState",
    "autocast",
    "check_mixed_precision_supported",
    "device_capability",
    "get_autocast_dtype",
    "is_autocast_enabled",
    "resolve_policy",
    "round_to",
]
