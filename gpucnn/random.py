"""Seeded random draws on either backend: ``manual_seed`` seeds every generator gpucnn uses."""

from __future__ import annotations

from typing import Any

import numpy as np

_seed: int | None = None
_generators: dict[str, Any] = {}


def manual_seed(seed: int) -> None:
    """Seed every random draw gpucnn makes (initialisers, dropout, shuffling, augmentation)."""
    global _seed
    _seed = int(seed)
    _generators.clear()


def initial_seed() -> int | None:
    """The last seed given to :func:`manual_seed`, or ``None``."""
    return _seed


def generator(backend: str = "numpy") -> Any:
    """The shared generator of ``backend`` (a NumPy or CuPy ``Generator``), seeded once."""
    gen = _generators.get(backend)
    if gen is None:
        if backend == "numpy":
            gen = np.random.default_rng(_seed)
        elif backend == "cuda":
            import cupy

            gen = cupy.random.default_rng(_seed)
        else:
            raise ValueError(f"unknown backend {backend!r}")
        _generators[backend] = gen
    return gen


def get_state() -> dict:
    """A picklable snapshot of the NumPy generator (for exact resume of training)."""
    return {"seed": _seed, "numpy": generator("numpy").bit_generator.state}


def set_state(state: dict) -> None:
    """Restore a snapshot taken by :func:`get_state`."""
    global _seed
    _seed = state.get("seed")
    generator("numpy").bit_generator.state = state["numpy"]
