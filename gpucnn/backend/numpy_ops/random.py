"""NumPy twin of ``cuda/random.cu``: Philox4x32-10 uniform numbers from a (seed, offset) stream.

Word ``w`` of the stream is word ``w % 4`` of Philox4x32-10 on counter ``w // 4`` (64 bits in
the two low counter words) under key ``(seed & 0xffffffff, seed >> 32)``. float32 uses one word
per number (``(word >> 8) * 2**-24``), float64 two (53 bits). ``offset`` counts words and must be
a multiple of 4. Vectorised over the Philox blocks: each block is computed once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucnn.backend.checks import check_random_args

__all__ = ["random_uniform"]

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_MASK = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


def philox4x32_10(c: tuple, k0: int, k1: int) -> tuple:
    """Philox4x32-10 on counter words ``c`` (four uint64 arrays holding 32-bit values)."""
    c0, c1, c2, c3 = c
    for _ in range(10):
        p0 = _M0 * c0
        p1 = _M1 * c2
        c0, c1, c2, c3 = (
            (p1 >> _S32) ^ c1 ^ np.uint64(k0),
            p1 & _MASK,
            (p0 >> _S32) ^ c3 ^ np.uint64(k1),
            p0 & _MASK,
        )
        k0 = (k0 + _W0) & 0xFFFFFFFF
        k1 = (k1 + _W1) & 0xFFFFFFFF
    return c0, c1, c2, c3


def philox_words(first_block: int, nblocks: int, seed: int) -> np.ndarray:
    """The ``4 * nblocks`` words of blocks ``first_block ...`` as uint32, in stream order."""
    block = np.arange(first_block, first_block + nblocks, dtype=np.uint64)
    zero = np.zeros_like(block)
    out = philox4x32_10(
        (block & _MASK, block >> _S32, zero, zero), seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF
    )
    return np.stack(out, axis=1).reshape(-1).astype(np.uint32)


def random_uniform(n: int, dtype: Any, seed: int, offset: int) -> np.ndarray:
    """``n`` uniform numbers in [0, 1) of ``dtype`` from stream ``(seed, offset)``, shape (n,)."""
    n, dt, seed, offset = check_random_args(n, dtype, seed, offset)
    per = 2 if dt == np.float64 else 1
    nwords = n * per
    first = offset // 4
    words = philox_words(first, -(-nwords // 4), seed)[:nwords]
    if dt == np.float32:
        return (words >> np.uint32(8)).astype(np.float32) * np.float32(2.0**-24)
    a = (words[0::2] >> np.uint32(5)).astype(np.float64)
    b = (words[1::2] >> np.uint32(6)).astype(np.float64)
    return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0)
