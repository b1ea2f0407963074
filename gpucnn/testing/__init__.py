"""Testing aids: the host emulator, the simulated CUDA device, gradient checks, the GPU check.

:func:`backend_scope` selects a backend for a block and restores exactly the one it found
(``None`` included, so a later ``auto`` is resolved afresh), as the tests' fixtures use it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["backend_scope"]


@contextlib.contextmanager
def backend_scope(name: str | None = None) -> Iterator[Any]:
    """Use backend ``name`` inside the block (``None``: leave it); restore the previous choice."""
    from gpucnn import backend as B

    prev = B._active
    try:
        yield B.use(name) if name is not None else None
    finally:
        B._active = prev
