"""Argument checks and scalar coefficients shared by both backends' primitives (the NumPy twin
and the CUDA launcher of a family validate and compute them the same way, and neither imports
the other). The im2col / col2im window
checks live with the convolution geometry (:mod:`gpucnn.backend.geometry`)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "FUSED_ACTIVATIONS", "check_fused_activation", "check_random_args", "nadam_coefficients",
]


def check_random_args(n: int, dtype: Any, seed: int, offset: int) -> tuple[int, np.dtype, int, int]:
    """Validate ``random_uniform`` arguments (shared by both backends)."""
    n, seed, offset = int(n), int(seed), int(offset)
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise TypeError(f"random_uniform: dtype must be float32 or float64, got {dt}")
    if n < 0:
        raise ValueError(f"random_uniform: n must be >= 0, got {n}")
    if not 0 <= seed < 2**64:
        raise ValueError(f"random_uniform: seed must be in [0, 2**64), got {seed}")
    if offset < 0 or offset % 4:
        raise ValueError(
            f"random_uniform: offset must be a non-negative multiple of 4, got {offset}"
        )
    return n, dt, seed, offset


def nadam_coefficients(lr: float, beta2: float, mu: float, mu_next: float, mu_product: float,
                       step: int) -> tuple[float, float, float]:
    """``(bc2, coef_g, coef_m)`` of NAdam step ``step``: ``1 - beta2**step``,
    ``lr*(1-mu)/(1-mu_product)`` and ``lr*mu_next/(1-mu_product*mu_next)`` (Python floats;
    ``mu_product`` already includes ``mu``)."""
    bc2 = 1.0 - float(beta2) ** step
    coef_g = float(lr) * (1.0 - mu) / (1.0 - mu_product)
    coef_m = float(lr) * mu_next / (1.0 - mu_product * mu_next)
    return bc2, coef_g, coef_m


#: Activations a convolution may fuse into its epilogue, and whether their backward needs the
#: pre-activation (gelu) or can read the mask off the output (relu, leaky relu with slope > 0).
FUSED_ACTIVATIONS = {"relu": False, "leaky_relu": False, "gelu": True, "gelu_tanh": True}


def check_fused_activation(op: str, kind: str, param: float) -> bool:
    """Whether the backward of ``kind`` needs the pre-activation; ``ValueError`` (naming
    ``op``) for an activation no convolution fuses."""
    if kind not in FUSED_ACTIVATIONS:
        raise ValueError(
            f"{op}: activation {kind!r} cannot be fused; expected one of "
            f"{', '.join(FUSED_ACTIVATIONS)}"
        )
    if kind == "leaky_relu" and not float(param) > 0:
        raise ValueError(f"{op}: a fused leaky_relu needs a negative slope > 0, got {param}")
    return FUSED_ACTIVATIONS[kind]
