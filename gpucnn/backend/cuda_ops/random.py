"""CuPy launcher of ``cuda/random.cu`` (Philox4x32-10 uniform numbers); see the NumPy twin."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucnn.backend.checks import check_random_args
from gpucnn.backend.runtime import current_runtime, dtype_suffix

__all__ = ["random_uniform"]


def random_uniform(n: int, dtype: Any, seed: int, offset: int) -> Any:
    """``n`` uniform numbers in [0, 1) of ``dtype`` from stream ``(seed, offset)``, shape (n,)."""
    n, dt, seed, offset = check_random_args(n, dtype, seed, offset)
    rt = current_runtime()
    out = rt.xp.empty(n, dtype=dt)
    rt.launch(
        "random",
        f"philox_uniform_{dtype_suffix(dt, 'philox_uniform')}",
        n,
        (
            out,
            np.int64(n),
            np.uint32(seed & 0xFFFFFFFF),
            np.uint32(seed >> 32),
            np.uint64(offset),
        ),
    )
    return out
