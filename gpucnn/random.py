"""Seeded random draws on either backend: ``manual_seed`` seeds every generator gpucnn uses.

Two sources, both seeded by :func:`manual_seed`:

- :func:`uniform`: a counter-based Philox4x32-10 stream (``cuda/random.cu`` and its NumPy twin)
  for per-element draws inside a training step (dropout masks). Its whole state is
  ``(seed, offset)``, the numbers are bit-identical on both backends, and a checkpoint restores
  it exactly on either.
- :func:`generator`: NumPy / CuPy ``Generator`` objects for everything else (initialisers,
  shuffling, augmentation parameters).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucnn.backend.device import device_rng

_seed: int | None = None
_generators: dict[str, Any] = {}
_offset = 0  # words of the Philox stream consumed so far (a multiple of 4)
_entropy_seed: int | None = None  # the stream's seed before any manual_seed


def manual_seed(seed: int) -> None:
    """Seed every random draw gpucnn makes (initialisers, dropout, shuffling, augmentation)."""
    global _seed, _offset
    _seed = int(seed)
    _offset = 0
    _generators.clear()


def _stream_seed() -> int:
    global _entropy_seed
    if _seed is not None:
        return _seed % 2**64
    if _entropy_seed is None:
        _entropy_seed = int(np.random.SeedSequence().generate_state(1, np.uint64)[0])
    return _entropy_seed


def uniform(shape: Any, dtype: Any = np.float32, backend: str = "numpy") -> Any:
    """Uniform [0, 1) numbers of ``shape`` on ``backend`` from the Philox stream.

    The same seed gives the same numbers on the NumPy and CUDA backends; each call advances
    the stream offset, which :func:`get_state` records.
    """
    global _offset
    from gpucnn.backend import get_backend
    from gpucnn.cuda_graph import refuse_in_capture

    # The stream offset is a host number passed to the kernel: a graph would replay one mask.
    refuse_in_capture("drawing random numbers (dropout, noise layers)")
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
    n = int(np.prod(shape, dtype=np.int64))
    dt = np.dtype(dtype)
    out = get_backend(backend).random_uniform(n, dt, _stream_seed(), _offset)
    words = n * (2 if dt == np.float64 else 1)
    _offset += -(-words // 4) * 4
    return out.reshape(shape)


def initial_seed() -> int | None:
    """The last seed given to :func:`manual_seed`, or ``None``."""
    return _seed


def generator(backend: str = "numpy") -> Any:
    """The shared generator of ``backend`` (a NumPy or device ``Generator``), seeded once."""
    gen = _generators.get(backend)
    if gen is None:
        if backend == "numpy":
            gen = np.random.default_rng(_seed)
        elif backend == "cuda":
            gen = device_rng(_seed)
        else:
            raise ValueError(f"unknown backend {backend!r}")
        _generators[backend] = gen
    return gen


def get_state() -> dict:
    """A picklable snapshot: the seed, the Philox stream offset and the NumPy generator.

    Enough for exact resume of training on either backend: per-step draws (dropout) come from
    the Philox stream, whose state is just (seed, offset).
    """
    return {
        "seed": _seed,
        "stream_seed": _stream_seed(),
        "offset": _offset,
        "numpy": generator("numpy").bit_generator.state,
    }


def set_state(state: dict) -> None:
    """Restore a snapshot taken by :func:`get_state`."""
    global _seed, _offset, _entropy_seed
    _seed = state.get("seed")
    if _seed is None and state.get("stream_seed") is not None:
        _entropy_seed = int(state["stream_seed"])
    _offset = int(state.get("offset", 0))
    generator("numpy").bit_generator.state = state["numpy"]
