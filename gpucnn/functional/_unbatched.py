"""Unbatched image input, as PyTorch takes it: ``(C, H, W)`` runs as a batch of one.

``conv2d`` and the pooling ops of ``torch.nn.functional`` accept a 3-D ``(C, H, W)`` input and
return a 3-D result. :func:`accepts_unbatched` gives a 4-D-only op that form: the input gets a
leading batch axis of 1 (a differentiable reshape, so gradients come back in the caller's
shape) and every output loses it again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from gpucnn.tensor import Tensor

__all__ = ["accepts_unbatched"]

F = TypeVar("F", bound=Callable[..., Any])


def _drop_batch(y: Any) -> Any:
    if isinstance(y, tuple):
        return tuple(_drop_batch(v) for v in y)
    return y.reshape(*y.shape[1:])


def accepts_unbatched(op: F) -> F:
    """Wrap a 4-D ``(N, C, H, W)`` op so that a 3-D ``(C, H, W)`` first argument also works."""

    @functools.wraps(op)
    def wrapper(x: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(x, Tensor) and x.ndim == 3:
            return _drop_batch(op(x.reshape(1, *x.shape), *args, **kwargs))
        return op(x, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
