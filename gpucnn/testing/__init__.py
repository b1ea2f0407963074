"""Testing aids: the host emulator, the simulated CUDA device, gradient checks, the GPU check.

:func:`backend_scope` selects a backend for a block and restores exactly the one it found
(``None`` included, so a later ``auto`` is resolved afresh), as the tests' fixtures use it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["backend_scope", "simulated_device"]


@contextlib.contextmanager
def backend_scope(name: str | None = None) -> Iterator[Any]:
    """Use backend ``name`` inside the block (``None``: leave it); restore the previous choice."""
    from gpucnn import backend as B

    prev = B._active
    try:
        yield B.use(name) if name is not None else None
    finally:
        B._active = prev


@contextlib.contextmanager
def simulated_device() -> Iterator[Any]:
    """Run the block with the cuda backend on the simulated CUDA device, then undo it all.

    Sets ``GPUCNN_SIMULATE_CUDA=1``, forgets the probe's verdict and every cached cuda object
    (backend, kernel runtime, compiled modules) so they are made afresh for the stand-in, makes
    ``cuda`` the active backend, and restores the previous state afterwards. Yields the
    :mod:`gpucnn.testing.simcuda` module (its counters, capture API).
    """
    import os

    from gpucnn import backend as B
    from gpucnn import random as R
    from gpucnn.backend import kernels, runtime
    from gpucnn.testing import simcuda

    saved = (
        os.environ.get("GPUCNN_SIMULATE_CUDA"), B._cuda_ok, B._cuda_reason, B._active,
        B._backends.get("cuda"), runtime._default, dict(kernels._modules),
        R._generators.pop("cuda", None),
    )  # fmt: skip
    os.environ["GPUCNN_SIMULATE_CUDA"] = "1"
    B._cuda_ok = B._cuda_reason = None
    B._backends.pop("cuda", None)
    runtime._default = None
    kernels._modules.clear()
    try:
        B.use("cuda")
        yield simcuda
    finally:
        env, B._cuda_ok, B._cuda_reason, B._active, cuda_be, runtime._default, mods, gen = saved
        if env is None:
            os.environ.pop("GPUCNN_SIMULATE_CUDA", None)
        else:
            os.environ["GPUCNN_SIMULATE_CUDA"] = env
        B._backends.pop("cuda", None)
        if cuda_be is not None:
            B._backends["cuda"] = cuda_be
        kernels._modules.clear()
        kernels._modules.update(mods)
        R._generators.pop("cuda", None)
        if gen is not None:
            R._generators["cuda"] = gen
