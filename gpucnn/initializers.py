"""Weight initialisers, by name or callable, drawn from :mod:`gpucnn.random` (seeded).

An initialiser is a callable ``init(shape, dtype=np.float32, backend="numpy") -> array``.
Fans follow PyTorch's weight layouts: a dense weight ``(out, in)`` has fan_in ``in`` and
fan_out ``out``; a conv weight ``(out, in/groups, kh, kw)`` has fan_in ``in/groups*kh*kw`` and
fan_out ``out*kh*kw``; a vector ``(n,)`` has fan_in = fan_out = n.

Draws always come from the NumPy generator of :func:`gpucnn.random.generator` and are then
moved to the target backend, so a seed gives the same initial weights on NumPy and CUDA.
Normal initialisers are untruncated (PyTorch's kaiming/xavier, not Keras's truncated normal).

Register your own with :func:`register` (or pass a callable directly to a layer).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gpucnn import backend as _backend
from gpucnn.random import generator

__all__ = [
    "compute_fans",
    "he_normal",
    "he_uniform",
    "glorot_normal",
    "glorot_uniform",
    "lecun_normal",
    "lecun_uniform",
    "zeros",
    "ones",
    "get",
    "serialize",
    "register",
]

Initializer = Callable[..., Any]


def compute_fans(shape: Sequence[int]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of ``shape`` in PyTorch layout (see module doc)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _scale(numerator: float, fan: int) -> float:
    """``sqrt(numerator / fan)``; 0 for a zero fan, which only an empty weight has (PyTorch
    leaves a zero-element tensor as it is; there is nothing to draw)."""
    return math.sqrt(numerator / fan) if fan > 0 else 0.0


def _finish(a: np.ndarray, dtype: Any, backend: str) -> Any:
    return _backend.to_backend(a.astype(dtype, copy=False), backend)


def _normal(shape: Sequence[int], std: float, dtype: Any, backend: str) -> Any:
    a = generator("numpy").standard_normal(tuple(shape)) * std
    return _finish(a, dtype, backend)


def _uniform(shape: Sequence[int], limit: float, dtype: Any, backend: str) -> Any:
    a = generator("numpy").uniform(-limit, limit, size=tuple(shape))
    return _finish(a, dtype, backend)


def he_normal(shape: Sequence[int], dtype: Any = np.float32, backend: str = "numpy") -> Any:
    """N(0, 2/fan_in) (He et al. 2015; PyTorch ``kaiming_normal_`` with ReLU gain)."""
    fan_in, _ = compute_fans(shape)
    return _normal(shape, _scale(2.0, fan_in), dtype, backend)


def he_uniform(shape: Sequence[int], dtype: Any = np.float32, backend: str = "numpy") -> Any:
    """U(-sqrt(6/fan_in), sqrt(6/fan_in))."""
    fan_in, _ = compute_fans(shape)
    return _uniform(shape, _scale(6.0, fan_in), dtype, backend)


def glorot_normal(shape: Sequence[int], dtype: Any = np.float32, backend: str = "numpy") -> Any:
    """N(0, 2/(fan_in+fan_out)) (Glorot & Bengio 2010)."""
    fan_in, fan_out = compute_fans(shape)
    return _normal(shape, _scale(2.0, fan_in + fan_out), dtype, backend)


def glorot_uniform(shape: Sequence[int], dtype: Any = np.float32, backend: str = "numpy") -> Any:
    """U(-sqrt(6/(fan_in+fan_out)), +sqrt(6/(fan_in+fan_out)))."""
    fan_in, fan_out = compute_fans(shape)
    return _uniform(shape, _scale(6.0, fan_in + fan_out), dtype, backend)


def lecun_normal(shape: Sequence[int], dtype: Any = np.float32, backend: str = "numpy") -> Any:
    """N(0, 1/fan_in)."""
    fan_in, _ = compute_fans(shape)
    return _normal(shape, _scale(1.0, fan_in), dtype, backend)


def lecun_uniform(shape: Sequence[int], dtype: Any = np.float32, backend: str = "numpy") -> Any:
    """U(-sqrt(3/fan_in), sqrt(3/fan_in))."""
    fan_in, _ = compute_fans(shape)
    return _uniform(shape, _scale(3.0, fan_in), dtype, backend)


def zeros(shape: Sequence[int], dtype: Any = np.float32, backend: str = "numpy") -> Any:
    """All zeros (draws nothing from the generator)."""
    return _backend.get_backend(backend).xp.zeros(tuple(shape), dtype=dtype)


def ones(shape: Sequence[int], dtype: Any = np.float32, backend: str = "numpy") -> Any:
    """All ones (draws nothing from the generator)."""
    return _backend.get_backend(backend).xp.ones(tuple(shape), dtype=dtype)


_REGISTRY: dict[str, Initializer] = {
    f.__name__: f
    for f in (
        he_normal,
        he_uniform,
        glorot_normal,
        glorot_uniform,
        lecun_normal,
        lecun_uniform,
        zeros,
        ones,
    )
}
_REGISTRY.update(
    {
        "kaiming_normal": he_normal,
        "kaiming_uniform": he_uniform,
        "xavier_normal": glorot_normal,
        "xavier_uniform": glorot_uniform,
    }
)


def register(fn: Initializer, name: str | None = None) -> Initializer:
    """Make ``fn`` available by ``name`` (default ``fn.__name__``) to :func:`get` and configs."""
    _REGISTRY[name or fn.__name__] = fn
    return fn


def get(init: str | Initializer, custom_objects: dict | None = None) -> Initializer:
    """The initialiser called ``init`` (case-insensitive), or ``init`` itself if callable.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    if callable(init):
        return init
    if isinstance(init, str):
        if custom_objects and init in custom_objects:
            return custom_objects[init]
        fn = _REGISTRY.get(init.lower())
        if fn is not None:
            return fn
    raise ValueError(
        f"unknown initializer {init!r}; known names: {', '.join(sorted(_REGISTRY))} "
        "(or pass a callable(shape, dtype, backend))"
    )


def serialize(init: str | Initializer) -> str:
    """The name under which ``init`` can be found again by :func:`get` (for configs)."""
    if isinstance(init, str):
        return init
    for name, fn in _REGISTRY.items():
        if fn is init:
            return name
    return getattr(init, "__name__", repr(init))
